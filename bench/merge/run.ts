/**
 * Merge-kernel benchmark: θ(w) = θ_base + Σ_k w_k·v_k over a synthetic pool, against the
 * physical limits measured in the same run (memcpy of the same bytes, and reading the same
 * shards without merging). Usage: npm run bench:merge -- [--mb 256] [--vectors 4] [--repeat 3]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeModel } from '../../shared/onnx/build.js';
import { encodeFloats, type DtypeName } from '../../shared/onnx/dtype.js';
import { node, tensor, valueInfo } from '../../shared/onnx/build.js';
import { buildPool } from '../../shared/pool/build.js';
import { uniformWeighting } from '../../shared/genome.js';
import { Pool } from '../../shared/pool/reader.js';
import { Rng } from '../../shared/rng.js';
import { allocateMerged, allocateWidened, mergeInto, mergeIntoWidened, mergeToBuffer } from '../../worker/merge/merge.js';
import { mergeChunkJs } from '../../worker/merge/kernels.js';
import { NATIVE_DTYPE, nativeKernels } from '../../shared/native-kernels.js';
import { table } from '../../cli/output.js';
import { availableParallelism } from 'node:os';

const { values } = parseArgs({
  options: {
    'kernels-only': { type: 'boolean', default: false },
    mb: { type: 'string', default: '256' },
    vectors: { type: 'string', default: '4' },
    repeat: { type: 'string', default: '3' },
  },
});
const MB = Number(values.mb);
const K = Number(values.vectors);
const REPEAT = Number(values.repeat);
const TENSORS = 8;

async function writeSynthetic(path: string, dtype: DtypeName, seed: number): Promise<void> {
  const bytesPer = dtype === 'float32' ? 4 : 2;
  const n = Math.floor((MB * 2 ** 20) / TENSORS / bytesPer);
  const rng = new Rng(seed);
  const vals = new Float32Array(n);
  const inits = [];
  for (let t = 0; t < TENSORS; t++) {
    for (let i = 0; i < n; i += 1) vals[i] = (i % 1024 === 0 ? rng.normal() : vals[i - 1]! * 0.999) + 1e-3 * seed;
    const raw = new Uint8Array(n * bytesPer);
    encodeFloats(dtype, vals, raw, n);
    inits.push(tensor(`layer${t}.weight`, dtype, [n], raw));
  }
  await writeModel(
    path,
    {
      irVersion: 8,
      opsetImport: [{ domain: '', version: 17 }],
      graph: {
        name: 'synthetic',
        node: [node('Cast', ['input_ids'], ['logits'], [{ name: 'to', type: 2, i: 1 }])],
        initializer: inits,
        input: [valueInfo('input_ids', 'int64', ['batch', 'seq'])],
        output: [valueInfo('logits', 'float32', ['batch', 'seq'])],
      },
    },
    { externalData: true },
  );
}

function best(times: number[]): number {
  return Math.min(...times);
}

async function time(fn: () => Promise<unknown> | unknown): Promise<number> {
  const times: number[] = [];
  for (let r = 0; r < REPEAT; r++) {
    const t0 = performance.now();
    await fn();
    times.push((performance.now() - t0) / 1000);
  }
  return best(times);
}

/** Best of REPEAT of `fn` with the pool's shards mapped, and with them read, alternating: [mapped s, read s]. */
async function timeMappedAndRead(fn: () => Promise<unknown>): Promise<[number, number]> {
  const was = process.env.OPTIMER_MMAP;
  const times: [number[], number[]] = [[], []];
  try {
    for (let r = 0; r < 2 * REPEAT; r++) {
      process.env.OPTIMER_MMAP = r % 2 === 0 ? '1' : '0';
      const t0 = performance.now();
      await fn();
      times[r % 2]!.push((performance.now() - t0) / 1000);
    }
  } finally {
    if (was === undefined) delete process.env.OPTIMER_MMAP;
    else process.env.OPTIMER_MMAP = was;
  }
  return [best(times[0]), best(times[1])];
}

/**
 * In-memory kernel table: one chunk of n elements (n = --mb MiB of fp32, 16M elements at --mb 64), K vectors.
 * Bytes moved = (K + 1) buffers read + 1 written = (K + 2)·n·element size; memcpy moves the same bytes
 * (Buffer.copy of half that size: it reads and writes each byte), as the pool rows below count it.
 */
function kernelTable(): (string | number)[][] {
  const native = nativeKernels();
  const n = Math.floor((MB * 2 ** 20) / 4);
  const threads = availableParallelism();
  const out: (string | number)[][] = [
    [
      'dtype',
      'K',
      'MiB moved',
      'memcpy GB/s',
      'js GB/s',
      'native GB/s',
      'native/memcpy',
      `native ${threads} threads GB/s`,
      `${threads} threads/memcpy`,
    ],
  ];
  const rng = new Rng(1);
  for (const dtype of ['float32', 'float16', 'bfloat16'] as const) {
    const size = dtype === 'float32' ? 4 : 2;
    const vals = new Float32Array(n);
    for (let i = 0; i < n; i++) vals[i] = rng.normal();
    const make = () => {
      const b = new Uint8Array(n * size);
      encodeFloats(dtype, vals, b, n);
      return b;
    };
    const base = make();
    const deltas = Array.from({ length: 8 }, make);
    const dest = new Uint8Array(n * size);
    const acc = new Float32Array(n);
    const tmp = [0, 1, 2, 3].map(() => new Float32Array(n));
    for (const k of [4, 8]) {
      const d = deltas.slice(0, k);
      const w = d.map((_, j) => 0.1 * (j + 1));
      const wf = Float64Array.from(w);
      const moved = (k + 2) * n * size;
      // memcpy reads and writes: copying moved/2 bytes moves the same bytes as the merge
      const src = Buffer.alloc(moved / 2, 1);
      const dst = Buffer.alloc(moved / 2);
      const bestOf = (fn: () => void) => {
        let b = Number.POSITIVE_INFINITY;
        for (let r = 0; r < REPEAT; r++) {
          const t0 = performance.now();
          fn();
          b = Math.min(b, (performance.now() - t0) / 1000);
        }
        return b;
      };
      const memS = bestOf(() => src.copy(dst));
      const jsS = bestOf(() => mergeChunkJs(dtype, base, d, w, dest, n, acc, tmp));
      const natS = native ? bestOf(() => native.merge(NATIVE_DTYPE[dtype], base, d, wf, dest, n, 1)) : Number.NaN;
      const parS = native ? bestOf(() => native.merge(NATIVE_DTYPE[dtype], base, d, wf, dest, n, threads)) : Number.NaN;
      const gb = (s: number) => moved / s / 1e9;
      out.push([
        dtype,
        k,
        (moved / 2 ** 20).toFixed(0),
        gb(memS).toFixed(2),
        gb(jsS).toFixed(2),
        native ? gb(natS).toFixed(2) : 'n/a',
        native ? `${((100 * memS) / natS).toFixed(0)}%` : 'n/a',
        native ? gb(parS).toFixed(2) : 'n/a',
        native ? `${((100 * memS) / parS).toFixed(0)}%` : 'n/a',
      ]);
    }
  }
  process.stdout.write(
    `in-memory kernels, n = ${n} elements, 1 and ${threads} threads (memcpy: 1), best of ${REPEAT}, native: ${native ? native.simd : 'not built'} (node ${process.version})\n${table(out)}\n`,
  );
  return out;
}

kernelTable();
if (values['kernels-only']) process.exit(0);

const rows: (string | number)[][] = [['dtype', 'operation', 'bytes moved', 'seconds', 'GB/s', 'vs memcpy']];
const dir = await mkdtemp(join(tmpdir(), 'optimer-bench-merge-'));
try {
  for (const dtype of ['float32', 'float16'] as const) {
    const base = join(dir, `${dtype}-base.onnx`);
    await writeSynthetic(base, dtype, 0);
    const vectors = [];
    for (let k = 1; k <= K; k++) {
      const path = join(dir, `${dtype}-ckpt${k}.onnx`);
      await writeSynthetic(path, dtype, k);
      vectors.push({ name: `v${k}`, path });
    }
    const out = join(dir, `${dtype}-pool`);
    const tb = performance.now();
    const manifest = await buildPool({ base, vectors, out });
    const buildS = (performance.now() - tb) / 1000;
    const M = manifest.weightsBytes;
    const pool = await Pool.open(out);
    const weights = uniformWeighting(new Map(vectors.map((v, i) => [v.name, 0.1 * (i + 1)])));
    const moved = (K + 2) * M; // K + 1 blobs read, one written
    // physical limits on this machine, same bytes, same run
    const src = Buffer.alloc(M, 1);
    const dst = Buffer.alloc(M);
    const memcpyS = await time(() => {
      for (let i = 0; i < (K + 2) / 2; i++) src.copy(dst);
    });
    const scratch = new Uint8Array(M);
    const readS = await time(async () => {
      for (const blob of [manifest.base.blob, ...manifest.vectors.map((v) => v.blob)])
        await pool.read(blob, 0, Math.min(blob.bytes, M), scratch);
    });
    const dest = allocateMerged(pool);
    await mergeInto(pool, weights, dest); // warm
    // what a CPU worker does with the weights as graph inputs: float32 out whatever the dtype
    const wide = allocateWidened(pool);
    await mergeIntoWidened(pool, weights, wide); // warm
    // each merge with the shards mapped and read through Node's file handles (the fallback where the
    // native addon is not built; OPTIMER_MMAP is read at each merge), in turn, so load swings hit both
    const [mergeS, mergeReadS] = await timeMappedAndRead(() => mergeInto(pool, weights, dest));
    const mergeFreshS = await time(() => mergeToBuffer(pool, weights));
    const [wideS, wideReadS] = await timeMappedAndRead(() => mergeIntoWidened(pool, weights, wide));
    const wideBytes = (K + 1) * M + (M / (dtype === 'float32' ? 4 : 2)) * 4;
    await pool.close();
    const gbs = (bytes: number, s: number) => bytes / s / 1e9;
    const add = (op: string, bytes: number, s: number) =>
      rows.push([dtype, op, `${(bytes / 2 ** 20).toFixed(0)} MiB`, s, gbs(bytes, s), (memcpyS / s).toFixed(2)]);
    add('memcpy (Buffer.copy), same bytes', moved, memcpyS);
    add(`read ${K + 1} blobs from shards`, (K + 1) * M, readS);
    add(`merge base + ${K} vectors, reused buffer`, moved, mergeS);
    add(`merge base + ${K} vectors, new buffer`, moved, mergeFreshS);
    add(`merge base + ${K} vectors, reused buffer, shards read (not mapped)`, moved, mergeReadS);
    add(`merge base + ${K} vectors into float32 arrays (weights as inputs)`, wideBytes, wideS);
    add(`merge base + ${K} vectors into float32 arrays, shards read (not mapped)`, wideBytes, wideReadS);
    add(`pool build (${K} checkpoints)`, (K + 1) * M, buildS);
  }
  process.stdout.write(`merge kernel, ${MB} MiB per model, ${K} vectors, best of ${REPEAT} (node ${process.version})\n`);
  process.stdout.write(`${table(rows)}\n`);
} finally {
  await rm(dir, { recursive: true, force: true });
}
