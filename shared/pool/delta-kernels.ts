import { decodeFloats, type DtypeName, encodeFloats } from '../onnx/dtype.js';
import { NATIVE_DTYPE, type NativeKernels, nativeKernels } from '../native-kernels.js';

/** Elements per kernel call: the K fp32 chunks stay in cache between the delta and the dot products. */
export const DELTA_CHUNK = 1 << 16;

/**
 * The pool build's arithmetic, one tensor of K checkpoints at a time, with buffers allocated once:
 * v_k = ckpt_k − base (fp32, stored in place over ckpt_k in the tensor's dtype) and the dot products
 * of the stored (rounded) vectors, summed in eight lanes by element index mod 8. The native kernels
 * and the JavaScript fallback do the same operations in the same order, so pools are byte-identical
 * (gram included) with or without the addon.
 */
export class DeltaKernels {
  /** lane l of pair (p, q) at (p·K + q)·8 + l; sums of exact fp32×fp32 products in fp64 */
  private readonly lanes: Float64Array;
  private readonly rounded: Float32Array[];
  private readonly fb = new Float32Array(DELTA_CHUNK);
  private readonly native: NativeKernels | null;

  constructor(
    private readonly K: number,
    native: NativeKernels | null = nativeKernels(),
  ) {
    this.native = K <= 64 ? native : null;
    this.lanes = new Float64Array(K * K * 8);
    this.rounded = Array.from({ length: K }, () => new Float32Array(DELTA_CHUNK));
  }

  /** Replaces each ckpts[k] (n elements of `dtype`) by ckpts[k] − base and adds the vectors' products to the gram. */
  deltasInPlace(dtype: DtypeName, base: Uint8Array, ckpts: Uint8Array[], n: number): void {
    const size = dtype === 'float32' ? 4 : dtype === 'float64' ? 8 : 2;
    const native = this.native && dtype !== 'float64' ? this.native : null;
    for (let start = 0; start < n; start += DELTA_CHUNK) {
      const count = Math.min(DELTA_CHUNK, n - start);
      const b = base.subarray(start * size, (start + count) * size);
      for (let k = 0; k < ckpts.length; k++) {
        const c = ckpts[k]!.subarray(start * size, (start + count) * size);
        if (native) native.delta(NATIVE_DTYPE[dtype as keyof typeof NATIVE_DTYPE], c, b, c, this.rounded[k]!, count);
        else this.deltaJs(dtype, c, b, this.rounded[k]!, count);
      }
      if (native) native.dots(this.rounded, count, this.lanes);
      else dotsJs(this.rounded, count, this.lanes);
    }
  }

  /** The gram matrix so far: lanes summed in order 0..7. */
  /** The vectors whose sum of squares so far is not finite: a NaN or an infinity in a delta (or an overflow). */
  nonFinite(): number[] {
    const out: number[] = [];
    for (let k = 0; k < this.K; k++) {
      let s = 0;
      for (let l = 0; l < 8; l++) s += this.lanes[(k * this.K + k) * 8 + l]!;
      if (!Number.isFinite(s)) out.push(k);
    }
    return out;
  }

  gram(): number[][] {
    const K = this.K;
    const g = Array.from({ length: K }, () => new Array<number>(K).fill(0));
    for (let p = 0; p < K; p++) {
      for (let q = p; q < K; q++) {
        let s = 0;
        for (let l = 0; l < 8; l++) s += this.lanes[(p * K + q) * 8 + l]!;
        g[p]![q] = s;
        g[q]![p] = s;
      }
    }
    return g;
  }

  /** c ← c − b in fp32, rounded to `dtype`; `rounded` gets the stored values back in fp32. */
  private deltaJs(dtype: DtypeName, c: Uint8Array, b: Uint8Array, rounded: Float32Array, count: number): void {
    const fb = this.fb;
    decodeFloats(dtype, c, rounded, count);
    decodeFloats(dtype, b, fb, count);
    for (let i = 0; i < count; i++) rounded[i] = rounded[i]! - fb[i]!;
    encodeFloats(dtype, rounded, c, count);
    if (dtype !== 'float32') decodeFloats(dtype, c, rounded, count);
  }
}

/** lanes[(p·K + q)·8 + i mod 8] += v_p[i]·v_q[i] for p ≤ q, i ascending: the native dots' order. */
export function dotsJs(v: Float32Array[], n: number, lanes: Float64Array): void {
  const K = v.length;
  for (let p = 0; p < K; p++) {
    const a = v[p]!;
    for (let q = p; q < K; q++) {
      const b = v[q]!;
      const L = (p * K + q) * 8;
      for (let i = 0; i < n; i++) lanes[L + (i & 7)] = lanes[L + (i & 7)]! + a[i]! * b[i]!;
    }
  }
}
