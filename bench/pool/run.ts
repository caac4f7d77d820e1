/**
 * Pool-build benchmark: `buildPool` on synthetic checkpoints (fp32 and fp16, external data as
 * exporters write it past 2 GB) against reading the same input files once, in the same run. The
 * input files are dropped from the page cache before each run (`dd iflag=nocache`, which drops only
 * these files) unless --warm is given or dd cannot; the table says which. The build runs twice
 * over: shards hashed on hashing threads (as `optimer pool build` does) and on the main thread
 * (as before them), alternately, so that both see the same load on a shared machine.
 * With --compare DIST (the dist/ folder of another build, e.g. of the base commit) that build's
 * buildPool runs too, in the same turns: the two are compared under the same load. --dtype runs one
 * dtype only. Each row gives the best and the median of the rounds.
 * Usage: npm run bench:pool -- [--mb 128] [--vectors 4] [--repeat 2] [--dtype float32|float16] [--compare DIST]
 */
import { mkdir, mkdtemp, open, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { parseArgs } from 'node:util';
import { table } from '../../cli/output.js';
import { node, tensor, valueInfo, writeModel } from '../../shared/onnx/build.js';
import { encodeFloats, type DtypeName } from '../../shared/onnx/dtype.js';
import { nativeKernels } from '../../shared/native-kernels.js';
import { buildPool } from '../../shared/pool/build.js';
import { defaultHashThreads } from '../../shared/pool/hash-threads.js';
import { Rng } from '../../shared/rng.js';

const { values } = parseArgs({
  options: {
    mb: { type: 'string', default: '128' },
    vectors: { type: 'string', default: '4' },
    repeat: { type: 'string', default: '2' },
    warm: { type: 'boolean', default: false },
    dtype: { type: 'string' },
    compare: { type: 'string' },
  },
});
type BuildPool = typeof buildPool;
const other: BuildPool | undefined =
  values.compare === undefined
    ? undefined
    : ((await import(pathToFileURL(join(resolve(values.compare), 'shared/pool/build.js')).href)) as { buildPool: BuildPool }).buildPool;
const MB = Number(values.mb);
const K = Number(values.vectors);
const REPEAT = Number(values.repeat);
/** tensors per model: a few large ones (embeddings, MLPs) and many small ones (norms, biases), as in an LLM */
const LARGE = 12;
const SMALL = 48;

async function writeCheckpoint(path: string, dtype: DtypeName, seed: number): Promise<void> {
  const bytesPer = dtype === 'float32' ? 4 : 2;
  const n = Math.floor((MB * 2 ** 20) / LARGE / bytesPer);
  const rng = new Rng(seed);
  const vals = new Float32Array(n);
  const inits = [];
  for (let t = 0; t < LARGE + SMALL; t++) {
    const m = t < LARGE ? n : 2048;
    for (let i = 0; i < m; i++) vals[i] = (i % 1024 === 0 ? rng.normal() : vals[i - 1]! * 0.999) + 1e-3 * seed;
    const raw = new Uint8Array(m * bytesPer);
    encodeFloats(dtype, vals, raw, m);
    inits.push(tensor(`layer${t}.weight`, dtype, [m], raw));
  }
  await writeModel(
    path,
    {
      irVersion: 8,
      opsetImport: [{ domain: '', version: 17 }],
      graph: {
        name: 'synthetic',
        node: [node('Cast', ['input_ids'], ['logits'], [{ name: 'to', type: 1, i: 1 }])],
        initializer: inits,
        input: [valueInfo('input_ids', 'int64', ['batch', 'seq'])],
        output: [valueInfo('logits', 'float32', ['batch', 'seq'])],
      },
    },
    { externalData: true },
  );
}

/** Reads every file once, as `cat` does: 8 MiB reads into one reused buffer. */
async function readAll(files: string[]): Promise<number> {
  const buf = Buffer.allocUnsafe(8 << 20);
  let total = 0;
  for (const f of files) {
    const fh = await open(f, 'r');
    try {
      for (;;) {
        const { bytesRead } = await fh.read(buf, 0, buf.length, null);
        if (bytesRead === 0) break;
        total += bytesRead;
      }
    } finally {
      await fh.close();
    }
  }
  return total;
}

/** Drops `files` from the page cache (POSIX_FADV_DONTNEED through GNU dd); false where that fails. */
function dropFromCache(files: string[]): boolean {
  try {
    for (const f of files) execFileSync('dd', [`if=${f}`, 'iflag=nocache', 'count=0', 'status=none'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

let cold = !values.warm;

/** REPEAT rounds of each of `runs` (each gives the seconds it took), in turns within each round: the times of each, sorted. */
async function rounds(files: string[], ...runs: (() => Promise<number>)[]): Promise<number[][]> {
  const t = runs.map((): number[] => []);
  for (let r = 0; r < REPEAT; r++) {
    for (const [i, run] of runs.entries()) {
      if (cold) cold = dropFromCache(files);
      t[i]!.push(await run());
    }
  }
  return t.map((x) => x.sort((a, b) => a - b));
}

function median(x: number[]): number {
  const m = x.length >> 1;
  return x.length % 2 === 1 ? x[m]! : (x[m - 1]! + x[m]!) / 2;
}

async function seconds(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
}

/** SHA-256 of `bytes` bytes in 5 MiB updates, on this thread: the pool's shards are content-addressed, so a build hashes all it writes. */
function sha256Of(bytes: number): number {
  const chunk = new Uint8Array(5 << 20).fill(1);
  const t0 = performance.now();
  const h = createHash('sha256');
  for (let done = 0; done < bytes; done += chunk.length) h.update(chunk.subarray(0, Math.min(chunk.length, bytes - done)));
  h.digest();
  return (performance.now() - t0) / 1000;
}

const native = nativeKernels();
const rows: (string | number)[][] = [
  ['dtype', 'operation', 'input MiB', 'best s', 'GB/s', '% of read', 'median s', 'GB/s', '% of read (median)'],
];
const dir = await mkdtemp(join(tmpdir(), 'optimer-bench-pool-'));
try {
  for (const dtype of (values.dtype === undefined ? ['float32', 'float16'] : [values.dtype]) as DtypeName[]) {
    const models = join(dir, dtype);
    await rm(models, { recursive: true, force: true });
    await mkdir(models, { recursive: true });
    const base = join(models, 'base.onnx');
    await writeCheckpoint(base, dtype, 0);
    const vectors: { name: string; path: string }[] = [];
    for (let k = 1; k <= K; k++) {
      const path = join(models, `ckpt${k}.onnx`);
      await writeCheckpoint(path, dtype, k);
      vectors.push({ name: `v${k}`, path });
    }
    const files = (await readdir(models)).map((f) => join(models, f));
    const bytes = (await Promise.all(files.map((f) => stat(f)))).reduce((a, s) => a + s.size, 0);
    const out = join(dir, `${dtype}-pool`);
    // a fresh pool each time (no shard is reused), removed after the run (untimed): dirty pages do not pile up
    const build =
      (hashThreads?: number, fn: BuildPool = buildPool) =>
      async () => {
        const s = await seconds(() => fn({ base, vectors, out, ...(hashThreads === undefined ? {} : { hashThreads }) }));
        await rm(out, { recursive: true, force: true });
        execFileSync('sync');
        return s;
      };
    // the read in the same turns as the builds: every figure sees the same load
    const [readS, threadsS, mainS, otherS] = (await rounds(
      files,
      () => seconds(() => readAll(files)),
      build(),
      build(0),
      ...(other ? [build(undefined, other)] : []),
    )) as [number[], number[], number[], number[] | undefined];
    const add = (op: string, s: number[]) =>
      rows.push([
        dtype,
        op,
        (bytes / 2 ** 20).toFixed(0),
        s[0]!.toFixed(3),
        (bytes / s[0]! / 1e9).toFixed(2),
        `${((100 * readS[0]!) / s[0]!).toFixed(0)}%`,
        median(s).toFixed(3),
        (bytes / median(s) / 1e9).toFixed(2),
        `${((100 * median(readS)) / median(s)).toFixed(0)}%`,
      ]);
    add(`read the ${files.length} input files once (cat)`, readS);
    add('sha256 of the same bytes, one thread (no I/O)', [sha256Of(bytes)]);
    add(`pool build, base + ${K} checkpoints, hashes on the main thread`, mainS);
    add(`pool build, base + ${K} checkpoints, hashes on ${defaultHashThreads()} threads`, threadsS);
    if (otherS) add(`pool build of ${values.compare}, hashes on ${defaultHashThreads()} threads`, otherS);
    await rm(models, { recursive: true, force: true });
  }
  process.stdout.write(
    `pool build, ${MB} MiB per model, ${K} checkpoints, ${REPEAT} rounds, page cache ${cold ? 'cold (input files dropped before each run)' : 'warm'}, kernels: ${native ? `native ${native.simd}` : 'JavaScript'} (node ${process.version})\n${table(rows)}\n`,
  );
} finally {
  await rm(dir, { recursive: true, force: true });
}
