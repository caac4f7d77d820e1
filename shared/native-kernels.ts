import { createRequire } from 'node:module';
import { join } from 'node:path';
import { packageRoot } from './package-root.js';

/** Element types of the native kernels, as native/kernels.cc numbers them. */
export const NATIVE_DTYPE = { float32: 0, float16: 1, bfloat16: 2 } as const;

/** The Node-API addon built by native/build.sh (native/kernels.cc gives the argument conventions). */
export interface NativeKernels {
  /**
   * out = base + Σ w_k·deltas_k over n elements; dtype from NATIVE_DTYPE; at most 64 deltas. With
   * `widen` (version ≥ 2) out is float32: each result rounded to the dtype, then widened exactly.
   */
  merge(
    dtype: number,
    base: Uint8Array,
    deltas: Uint8Array[],
    w: Float64Array,
    out: Uint8Array,
    n: number,
    threads: number,
    widen?: boolean,
  ): void;
  delta(dtype: number, ckpt: Uint8Array, base: Uint8Array, out: Uint8Array, rounded: Float32Array | null, n: number): void;
  dots(vectors: Float32Array[], n: number, lanes: Float64Array): void;
  /**
   * SHA-256's compression function over whole 64-byte blocks (SHA-NI; absent where the CPU lacks it):
   * buffers of one length, `states` holding 8 words (a…h) per buffer, or 16 (two chains over the same blocks).
   */
  sha256Blocks?: (states: Uint32Array, data: Uint8Array[]) => void;
  /**
   * A private, copy-on-write mapping of a whole file (POSIX builds only): reads are views of the
   * page cache. Throws with the system's message when the file cannot be opened or mapped.
   */
  mapFile?: (path: string) => ArrayBuffer;
  /** Detaches a mapFile buffer (its views then have length 0) and unmaps it now. */
  unmapFile?: (ab: ArrayBuffer) => void;
  readonly simd: string;
  /** absent in builds before `widen` (such a build ignores the argument: check before passing it) */
  readonly version?: number;
  readonly hardwareThreads: number;
}

/** Where native/build.sh puts the addon (hashing threads load it from there). */
export const NATIVE_KERNELS_PATH = join(packageRoot, 'native', 'build', 'optimer_kernels.node');

let cached: NativeKernels | null | undefined;

/** The native kernels, or null when not built, not loadable, or OPTIMER_NATIVE=0. Never throws. */
export function nativeKernels(): NativeKernels | null {
  if (cached !== undefined) return cached;
  cached = null;
  if (process.env.OPTIMER_NATIVE === '0') return cached;
  try {
    const require = createRequire(import.meta.url);
    const addon = require(NATIVE_KERNELS_PATH) as NativeKernels;
    if (typeof addon?.merge === 'function') cached = addon;
  } catch {
    cached = null;
  }
  return cached;
}
