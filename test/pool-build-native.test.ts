import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, inject, it } from 'vitest';
import { nativeKernels } from '../shared/native-kernels.js';
import { DELTA_CHUNK, DeltaKernels } from '../shared/pool/delta-kernels.js';
import { encodeFloats } from '../shared/onnx/dtype.js';
import { Rng } from '../shared/rng.js';
import { useTempDir } from './helpers/temp.js';

const family = inject('family');
const familyFp16 = inject('familyFp16');
const tmp = useTempDir('pool-native');
const native = nativeKernels();
const run = promisify(execFile);

function randomTensor(rng: Rng, dtype: 'float32' | 'float16' | 'bfloat16', n: number, scale: number): Uint8Array {
  const f = new Float32Array(n);
  for (let i = 0; i < n; i++) f[i] = rng.normal() * scale;
  const out = new Uint8Array(n * (dtype === 'float32' ? 4 : 2));
  encodeFloats(dtype, f, out, n);
  return out;
}

describe.skipIf(!native)('pool build kernels, native against JavaScript', () => {
  it('pool build - deltas and gram are byte-identical with and without the native kernels', () => {
    const rng = new Rng(3);
    for (const dtype of ['float32', 'float16', 'bfloat16'] as const) {
      // sizes around the chunk and SIMD widths, several tensors summed into one gram
      const sizes = [1, 7, 17, 1000, DELTA_CHUNK + 9];
      const nat = new DeltaKernels(3, native);
      const js = new DeltaKernels(3, null);
      for (const n of sizes) {
        const base = randomTensor(rng, dtype, n, 1);
        const ckpts = [0, 1, 2].map(() => randomTensor(rng, dtype, n, 1));
        const a = ckpts.map((c) => c.slice());
        const b = ckpts.map((c) => c.slice());
        nat.deltasInPlace(dtype, base, a, n);
        js.deltasInPlace(dtype, base, b, n);
        for (let k = 0; k < 3; k++) expect(Buffer.from(a[k]!).equals(Buffer.from(b[k]!)), `${dtype} n=${n} vector ${k}`).toBe(true);
        if (n > 1) expect(Buffer.from(a[0]!).equals(Buffer.from(ckpts[0]!)), 'the deltas overwrite the checkpoint').toBe(false);
      }
      const g = nat.gram();
      expect(g).toEqual(js.gram());
      expect(g[0]![0]).toBeGreaterThan(0);
      expect(g[0]![1]).toBe(g[1]![0]);
    }
  });
});

describe.skipIf(!native)('pool build, with and without the addon', () => {
  async function build(f: typeof family, out: string, nativeOn: boolean): Promise<void> {
    const args = ['dist/cli/main.js', 'pool', 'build', '--base', f.base, '--out', out];
    for (const [name, path] of Object.entries(f.checkpoints)) args.push('--vector', `${name}=${path}`);
    await run(process.execPath, args, { env: { ...process.env, OPTIMER_NATIVE: nativeOn ? '1' : '0' } });
  }

  it('pool build - writes the same shards and manifest with OPTIMER_NATIVE=0 (fp32 and fp16)', async () => {
    for (const [label, f] of [
      ['fp32', family],
      ['fp16', familyFp16],
    ] as const) {
      const [a, b] = [join(tmp, `${label}-native`), join(tmp, `${label}-js`)];
      await build(f, a, true);
      await build(f, b, false);
      const shards = async (d: string) => (await readdir(join(d, 'shards'))).sort();
      expect(await shards(a)).toEqual(await shards(b));
      const manifest = async (d: string) => JSON.parse(await readFile(join(d, 'manifest.json'), 'utf8'));
      const [ma, mb] = [await manifest(a), await manifest(b)];
      expect(ma.gram).toEqual(mb.gram);
      expect(ma).toEqual(mb);
    }
  });
});
