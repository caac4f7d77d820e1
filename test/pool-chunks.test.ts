import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { node, tensor, valueInfo, writeModel } from '../shared/onnx/build.js';
import { encodeFloats, type DtypeName } from '../shared/onnx/dtype.js';
import { buildPool, type BuildPoolOptions } from '../shared/pool/build.js';
import { DELTA_CHUNK } from '../shared/pool/delta-kernels.js';
import { Rng } from '../shared/rng.js';
import { useTempDir } from './helpers/temp.js';

const tmp = useTempDir('pool-chunks');
const run = promisify(execFile);

/** Tensors that span several chunks of DELTA_CHUNK elements (and end inside one), small ones, and one that is not merged. */
const TENSORS: [string, DtypeName, number][] = [
  ['big32', 'float32', 3 * DELTA_CHUNK + 1003],
  ['small32', 'float32', 5],
  ['big16', 'float16', 2 * DELTA_CHUNK + 7],
  ['bigbf16', 'bfloat16', DELTA_CHUNK + 64],
  ['big64', 'float64', DELTA_CHUNK + 3],
  ['empty', 'float32', 0],
];

async function writeCheckpoint(path: string, seed: number, externalData: boolean): Promise<void> {
  const rng = new Rng(seed + 1);
  const inits = TENSORS.map(([name, dtype, n]) => {
    const f = new Float32Array(n);
    for (let i = 0; i < n; i++) f[i] = rng.normal() * (1 + seed);
    const raw = new Uint8Array(n * { float32: 4, float16: 2, bfloat16: 2, float64: 8 }[dtype as 'float32']!);
    if (dtype === 'float64') new Float64Array(raw.buffer).set(f);
    else encodeFloats(dtype, f, raw, n);
    return tensor(name, dtype, [n], raw);
  });
  inits.push(tensor('steps', 'int64', [2], new Uint8Array(new BigInt64Array([3n, 4n]).buffer)));
  await writeModel(
    path,
    {
      irVersion: 8,
      opsetImport: [{ domain: '', version: 17 }],
      graph: {
        name: 'chunks',
        node: [node('Cast', ['input_ids'], ['logits'], [{ name: 'to', type: 1, i: 1 }])],
        initializer: inits,
        input: [valueInfo('input_ids', 'int64', ['batch', 'seq'])],
        output: [valueInfo('logits', 'float32', ['batch', 'seq'])],
      },
    },
    { externalData },
  );
}

/** Every file of a pool by name, as its sha256 (the shards are named by theirs: this checks the bytes), and the manifest. */
async function poolFiles(out: string): Promise<Map<string, string>> {
  const files = new Map<string, string>([['manifest.json', await readFile(join(out, 'manifest.json'), 'utf8')]]);
  for (const f of await readdir(join(out, 'shards')))
    files.set(
      f,
      createHash('sha256')
        .update(await readFile(join(out, 'shards', f)))
        .digest('hex'),
    );
  return files;
}

async function models(externalData: boolean): Promise<Omit<BuildPoolOptions, 'out'>> {
  const dir = join(tmp, externalData ? 'external' : 'inline');
  await mkdir(dir, { recursive: true });
  const base = join(dir, 'base.onnx');
  await writeCheckpoint(base, 0, externalData);
  const vectors = [];
  for (const k of [1, 2, 3]) {
    const path = join(dir, `c${k}.onnx`);
    await writeCheckpoint(path, k, externalData);
    vectors.push({ name: `v${k}`, path });
  }
  return { base, vectors };
}

describe('pool build in chunks', () => {
  it('pool build - tensors in many chunks give the pool of whole tensors (external and inline data, pieces of whole blocks or not, threads or not)', async () => {
    for (const externalData of [true, false]) {
      const m = await models(externalData);
      for (const pieceBytes of [4096, 3000]) {
        // shards and pieces end inside chunks, chunks inside pieces
        const shape = { shardBytes: 300_001, pieceBytes };
        const whole = join(tmp, `${externalData}-${pieceBytes}-whole`);
        await buildPool({ ...m, ...shape, out: whole, chunkBytes: 2 ** 30, hashThreads: 0 });
        const want = await poolFiles(whole);
        expect(want.size).toBeGreaterThan(8);
        for (const hashThreads of [0, 2]) {
          const out = join(tmp, `${externalData}-${pieceBytes}-chunks-${hashThreads}`);
          await buildPool({ ...m, ...shape, out, chunkBytes: 1, hashThreads });
          expect(await poolFiles(out), `external ${externalData}, pieces of ${pieceBytes}, ${hashThreads} threads`).toEqual(want);
        }
      }
    }
  });

  it('pool build - in chunks, the same pool with OPTIMER_NATIVE=0 (JavaScript kernels, node:crypto hashes)', async () => {
    const m = await models(true);
    const shape = { shardBytes: 300_001, pieceBytes: 4096, chunkBytes: 1 };
    const a = join(tmp, 'native-on');
    await buildPool({ ...m, ...shape, out: a });
    const b = join(tmp, 'native-off');
    const module = resolve('dist/shared/pool/build.js');
    const code = `import { buildPool } from ${JSON.stringify(module)};
await buildPool(${JSON.stringify({ ...m, ...shape, out: b })});`;
    await run(process.execPath, ['--input-type=module', '-e', code], { env: { ...process.env, OPTIMER_NATIVE: '0' } });
    expect(await poolFiles(b)).toEqual(await poolFiles(a));
  });
});
