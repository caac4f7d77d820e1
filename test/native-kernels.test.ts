import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { packageRoot } from '../shared/package-root.js';
import { decodeFloats, type DtypeName } from '../shared/onnx/dtype.js';
import { NATIVE_DTYPE, nativeKernels } from '../shared/native-kernels.js';
import { Rng } from '../shared/rng.js';
import { mergeChunk, mergeChunkJs, mergeChunkWidened } from '../worker/merge/kernels.js';

const DTYPES = ['float32', 'float16', 'bfloat16'] as const;
const SIZES = [1, 7, 63, 64, 65, 1000, 4097];
const size = (d: DtypeName) => (d === 'float32' ? 4 : 2);

/** Random values in the dtype, aligned, with NaN, ±Inf and ±0 sprinkled in. */
function randomBuffer(rng: Rng, dtype: DtypeName, n: number): Uint8Array {
  const buf = new Uint8Array(n * size(dtype));
  if (dtype === 'float32') {
    const f = new Float32Array(buf.buffer);
    for (let i = 0; i < n; i++) f[i] = rng.normal() * 2 ** Math.floor(rng.normal() * 4);
    const specials = [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 0, -0, 1e-45];
    for (let i = 0; i < n; i++) if (rng.uniform() < 0.02) f[i] = specials[Math.floor(rng.uniform() * specials.length)]!;
  } else {
    // raw 16-bit patterns: every class (subnormal, NaN, Inf) appears at random
    const u = new Uint16Array(buf.buffer);
    for (let i = 0; i < n; i++) u[i] = Math.floor(rng.uniform() * 65536);
    if (dtype === 'bfloat16') for (let i = 0; i < n; i++) if (rng.uniform() < 0.7) u[i] = (u[i]! & 0x807f) | 0x3c00; // mostly moderate exponents
  }
  return buf;
}

/** One merge through `kernel` into a fresh output, with fresh scratch buffers. */
function run(kernel: typeof mergeChunk, dtype: DtypeName, base: Uint8Array, deltas: Uint8Array[], w: number[], n: number): Uint8Array {
  const out = new Uint8Array(n * size(dtype));
  kernel(
    dtype,
    base,
    deltas,
    w,
    out,
    n,
    new Float32Array(n),
    [0, 1, 2, 3].map(() => new Float32Array(n)),
  );
  return out;
}

/** Equal bytes, element by element, except where both are NaN. */
function expectSame(dtype: DtypeName, a: Uint8Array, b: Uint8Array, n: number, label: string): void {
  const fa = new Float32Array(n);
  const fb = new Float32Array(n);
  decodeFloats(dtype, a, fa, n);
  decodeFloats(dtype, b, fb, n);
  const s = size(dtype);
  for (let i = 0; i < n; i++) {
    if (Number.isNaN(fa[i]) && Number.isNaN(fb[i])) continue;
    const ea = Buffer.from(a.subarray(i * s, (i + 1) * s)).toString('hex');
    const eb = Buffer.from(b.subarray(i * s, (i + 1) * s)).toString('hex');
    if (ea !== eb) expect.fail(`${label}: element ${i}: native ${ea} (${fa[i]}), js ${eb} (${fb[i]})`);
  }
}

const native = nativeKernels();

describe('native kernels', () => {
  it("compile against native/napi-min.h alone, as where Node's headers are missing (every Node-API call declared)", () => {
    const cxx = ['g++', 'clang++'].find((c) => spawnSync(c, ['--version']).status === 0);
    if (!cxx) {
      expect(process.env.CI_EXPECT_NATIVE).not.toBe('1'); // CI installs a compiler
      return;
    }
    const r = spawnSync(cxx, ['-std=c++17', '-fsyntax-only', '-DOPTIMER_NAPI_MIN', join(packageRoot, 'native', 'kernels.cc')], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('the portable scalar path gives the same bytes: these tests again, in a child with OPTIMER_NATIVE_SIMD=scalar', () => {
    if (process.env.OPTIMER_NATIVE_SIMD || !native) {
      // the child itself, or no addon (nothing native to force): the comparisons below are the test
      expect(native === null || native.simd === process.env.OPTIMER_NATIVE_SIMD).toBe(true);
      return;
    }
    const vitest = join(packageRoot, 'node_modules', 'vitest', 'vitest.mjs');
    const config = join(packageRoot, 'test', 'helpers', 'kernels-only.config.ts');
    const r = spawnSync(process.execPath, [vitest, 'run', '--config', config], {
      cwd: packageRoot,
      env: { ...process.env, OPTIMER_NATIVE_SIMD: 'scalar', NO_COLOR: '1', FORCE_COLOR: '0' },
      encoding: 'utf8',
      timeout: 120_000,
    });
    expect(r.status, `${r.stdout}\n${r.stderr}`.slice(-3000)).toBe(0);
    expect(r.stdout).toMatch(/Tests\s+\d+ passed \(\d+\)/);
  }, 150_000);

  it('load when built (and must when CI_EXPECT_NATIVE=1); null under OPTIMER_NATIVE=0', () => {
    if (process.env.CI_EXPECT_NATIVE === '1') expect(native).not.toBeNull();
    if (process.env.OPTIMER_NATIVE === '0') expect(native).toBeNull();
    if (native) expect(['avx512', 'avx2', 'scalar']).toContain(native.simd);
  });

  it('merge: the same bytes as the JavaScript kernels (NaN payloads aside), or the JS path when absent', () => {
    const rng = new Rng(7);
    let cases = 0;
    for (const dtype of DTYPES)
      for (const n of SIZES)
        for (let K = 0; K <= 9; K++) {
          const base = randomBuffer(rng, dtype, n);
          const deltas = Array.from({ length: K }, () => randomBuffer(rng, dtype, n));
          const w = Array.from({ length: K }, (_, k) => (k % 5 === 0 ? 0 : k % 3 === 0 ? -rng.uniform() : rng.normal()));
          const js = run(mergeChunkJs, dtype, base, deltas, w, n);
          // the addon called directly when present (the dispatch is tested below), else the fallback
          let got: Uint8Array = new Uint8Array(n * size(dtype));
          if (native) native.merge(NATIVE_DTYPE[dtype], base, deltas, Float64Array.from(w), got, n, 1);
          else got = run(mergeChunk, dtype, base, deltas, w, n);
          expectSame(dtype, got, js, n, `${dtype} n=${n} K=${K}`);
          cases++;
        }
    expect(cases).toBe(DTYPES.length * SIZES.length * 10);
  });

  it('mergeChunk (dispatching) agrees with mergeChunkJs', () => {
    const rng = new Rng(11);
    for (const dtype of DTYPES) {
      const n = 1000;
      const base = randomBuffer(rng, dtype, n);
      const deltas = [randomBuffer(rng, dtype, n), randomBuffer(rng, dtype, n)];
      const w = [0.25, -1.5];
      expectSame(dtype, run(mergeChunk, dtype, base, deltas, w, n), run(mergeChunkJs, dtype, base, deltas, w, n), n, dtype);
    }
  });

  it('widened merge (weights as float32 inputs): exactly the dtype merge, widened, natively and in JavaScript', () => {
    const rng = new Rng(17);
    let cases = 0;
    for (const dtype of DTYPES)
      for (const n of [1, 63, 65, 4097, 2 * 65536 + 5])
        for (const K of [0, 1, 3, 5]) {
          const base = randomBuffer(rng, dtype, n);
          const deltas = Array.from({ length: K }, () => randomBuffer(rng, dtype, n));
          const w = Array.from({ length: K }, () => rng.normal());
          const want = new Float32Array(n);
          decodeFloats(dtype, run(mergeChunkJs, dtype, base, deltas, w, n), want, n);
          const got = new Float32Array(n);
          const scratch = new Uint8Array(n * size(dtype));
          const acc = new Float32Array(n);
          const tmp = [0, 1, 2, 3].map(() => new Float32Array(n));
          mergeChunkWidened(dtype, base, deltas, w, got, n, acc, tmp, scratch, 2);
          for (let i = 0; i < n; i++) {
            if (Number.isNaN(got[i]) && Number.isNaN(want[i])) continue;
            if (!Object.is(got[i], want[i])) expect.fail(`${dtype} n=${n} K=${K}: element ${i}: widened ${got[i]}, dtype merge ${want[i]}`);
          }
          // the native path writes float32 into a buffer twice the size of a 16-bit one: nothing past n
          if (native && dtype !== 'float32') {
            const wide = new Float32Array(n + 8).fill(42);
            native.merge(NATIVE_DTYPE[dtype], base, deltas, Float64Array.from(w), new Uint8Array(wide.buffer), n, 1, true);
            expect(Array.from(wide.subarray(n))).toEqual(new Array(8).fill(42));
            expect(Object.is(wide[0], want[0]) || (Number.isNaN(wide[0]) && Number.isNaN(want[0]))).toBe(true);
          }
          cases++;
        }
    expect(cases).toBe(DTYPES.length * 5 * 4);
  });

  it('merge on several threads: the same bytes as on one, for every thread count and a ragged length', () => {
    const rng = new Rng(13);
    // past 4 × 65536 elements, so that the addon really splits (it keeps ≥ 65536 per thread)
    const n = 4 * 65536 + 77;
    for (const dtype of DTYPES) {
      const base = randomBuffer(rng, dtype, n);
      const deltas = Array.from({ length: 5 }, () => randomBuffer(rng, dtype, n));
      const w = [0.3, -1.25, 0.5, 2, -0.125];
      const one = new Uint8Array(n * size(dtype));
      mergeChunk(
        dtype,
        base,
        deltas,
        w,
        one,
        n,
        new Float32Array(n),
        [0, 1, 2, 3].map(() => new Float32Array(n)),
        1,
      );
      for (const threads of [2, 3, 4, 7]) {
        const many = new Uint8Array(n * size(dtype));
        mergeChunk(
          dtype,
          base,
          deltas,
          w,
          many,
          n,
          new Float32Array(n),
          [0, 1, 2, 3].map(() => new Float32Array(n)),
          threads,
        );
        expect(Buffer.from(many).equals(Buffer.from(one)), `${dtype}, ${threads} threads`).toBe(true);
      }
      expect(Buffer.from(one).equals(Buffer.from(base))).toBe(false);
    }
  });
});
