/**
 * Per-trial overhead benchmark: one trial as a worker runs it (fetch from the local cache, merge,
 * session creation, forward pass, loss) on a synthetic fp16 causal LM with a large vocabulary
 * (embedding, residual tanh-MLP blocks, LM head; weights stored in fp16 and cast in the graph, as
 * a CPU worker evaluates fp16 pools), for each merge/intra-op thread count given. The forward
 * pass alone is timed on a plain session of the same graph and weights; loss = evaluation − forward.
 * Usage: npm run bench:trial -- [--vocab 32000] [--dim 1024] [--hidden 4096] [--layers 8]
 *   [--vectors 2] [--batch 2] [--seq 128] [--threads 1,2] [--repeat 2]
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import ort from 'onnxruntime-node';
import { table } from '../../cli/output.js';
import { uniformWeighting } from '../../shared/genome.js';
import { intAttr, node, tensor, valueInfo, writeModel } from '../../shared/onnx/build.js';
import { encodeFloats } from '../../shared/onnx/dtype.js';
import { partName } from '../../shared/pool/manifest.js';
import { buildPool } from '../../shared/pool/build.js';
import { Pool } from '../../shared/pool/reader.js';
import { Rng } from '../../shared/rng.js';
import { toLossGraph } from '../../worker/eval/loss-graph.js';
import { createMergedSession } from '../../worker/eval/session.js';
import { SessionModel } from '../../worker/eval/session-model.js';
import { allocateMerged, mergeInto } from '../../worker/merge/merge.js';

const { values } = parseArgs({
  options: {
    vocab: { type: 'string', default: '32000' },
    dim: { type: 'string', default: '1024' },
    hidden: { type: 'string', default: '4096' },
    layers: { type: 'string', default: '8' },
    vectors: { type: 'string', default: '2' },
    batch: { type: 'string', default: '2' },
    seq: { type: 'string', default: '128' },
    threads: { type: 'string', default: '1,2' },
    repeat: { type: 'string', default: '2' },
  },
});
const [V, D, F, L, K, B, T, REPEAT] = ['vocab', 'dim', 'hidden', 'layers', 'vectors', 'batch', 'seq', 'repeat'].map((k) =>
  Number(values[k as keyof typeof values]),
) as [number, number, number, number, number, number, number, number];
const THREADS = String(values.threads)
  .split(',')
  .map((t) => Number(t));
const PARAMS = 2 * V * D + L * 2 * D * F;

/** fp16 values of N(0, scale²) drawn through a 64K table and an LCG: fast enough for a billion. */
function fp16Tensor(rng: Rng, n: number, scale: number): Uint8Array {
  const table = new Float32Array(65536);
  for (let i = 0; i < table.length; i++) table[i] = rng.normal() * scale;
  const bits = new Uint8Array(table.length * 2);
  encodeFloats('float16', table, bits, table.length);
  const t16 = new Uint16Array(bits.buffer);
  const out = new Uint8Array(n * 2);
  const o = new Uint16Array(out.buffer);
  let s = rng.int(2 ** 31) >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    o[i] = t16[s >>> 16]!;
  }
  return out;
}

async function writeLm(path: string, seed: number): Promise<void> {
  const rng = new Rng(seed);
  const inits = [tensor('E', 'float16', [V, D], fp16Tensor(rng, V * D, 1))];
  const nodes = [node('Cast', ['E'], ['E32'], [intAttr('to', 1)]), node('Gather', ['E32', 'input_ids'], ['h0'], [intAttr('axis', 0)])];
  for (let l = 0; l < L; l++) {
    inits.push(tensor(`A${l}`, 'float16', [D, F], fp16Tensor(rng, D * F, 1 / Math.sqrt(D))));
    inits.push(tensor(`B${l}`, 'float16', [F, D], fp16Tensor(rng, F * D, 1 / Math.sqrt(F))));
    nodes.push(
      node('Cast', [`A${l}`], [`A${l}f`], [intAttr('to', 1)]),
      node('Cast', [`B${l}`], [`B${l}f`], [intAttr('to', 1)]),
      node('MatMul', [`h${l}`, `A${l}f`], [`z${l}`]),
      node('Tanh', [`z${l}`], [`a${l}`]),
      node('MatMul', [`a${l}`, `B${l}f`], [`y${l}`]),
      node('Add', [`h${l}`, `y${l}`], [`h${l + 1}`]),
    );
  }
  inits.push(tensor('U', 'float16', [D, V], fp16Tensor(rng, D * V, 1 / Math.sqrt(D))));
  nodes.push(node('Cast', ['U'], ['U32'], [intAttr('to', 1)]), node('MatMul', [`h${L}`, 'U32'], ['logits']));
  await writeModel(
    path,
    {
      irVersion: 8,
      opsetImport: [{ domain: '', version: 17 }],
      graph: {
        name: 'bench-trial-lm',
        initializer: inits,
        node: nodes,
        input: [valueInfo('input_ids', 'int64', ['batch', 'seq'])],
        output: [valueInfo('logits', 'float32', ['batch', 'seq', V])],
      },
    },
    { externalData: true },
  );
}

async function best<R>(fn: () => Promise<R>): Promise<{ s: number; value: R }> {
  let s = Number.POSITIVE_INFINITY;
  let value: R | undefined;
  for (let r = 0; r < REPEAT; r++) {
    const t0 = performance.now();
    value = await fn();
    s = Math.min(s, (performance.now() - t0) / 1000);
  }
  return { s, value: value as R };
}

const dir = await mkdtemp(join(tmpdir(), 'optimer-bench-trial-'));
try {
  const models = join(dir, 'models');
  await mkdir(models);
  const t0 = performance.now();
  await writeLm(join(models, 'base.onnx'), 0);
  const vectors = [];
  for (let k = 1; k <= K; k++) {
    await writeLm(join(models, `ckpt${k}.onnx`), k);
    vectors.push({ name: `v${k}`, path: join(models, `ckpt${k}.onnx`) });
  }
  const genS = (performance.now() - t0) / 1000;
  const t1 = performance.now();
  await buildPool({ base: join(models, 'base.onnx'), vectors, out: join(dir, 'pool') });
  const buildS = (performance.now() - t1) / 1000;
  await rm(models, { recursive: true, force: true });
  const pool = await Pool.open(join(dir, 'pool'));
  const m = pool.manifest;
  const graphBytes = await pool.graphBytes();
  const loss = toLossGraph(graphBytes, { logits: m.model.output });
  const weighting = uniformWeighting(new Map(vectors.map((v, i) => [v.name, 0.3 + 0.1 * i])));
  const rng = new Rng(5);
  const seqs = Array.from({ length: B }, () => Int32Array.from({ length: T }, () => rng.int(V)));
  const ids = new ort.Tensor('int64', BigInt64Array.from(seqs.flatMap((s) => Array.from(s, BigInt))), [B, T]);
  const dest = allocateMerged(pool);
  const scratch = new Uint8Array(Math.max(...[m.base.blob, ...m.vectors.map((v) => v.blob)].map((b) => b.bytes)));
  const rows: (string | number)[][] = [
    ['threads', 'fetch (cached) s', 'merge s', 'session s', 'forward s', 'loss s', 'trial s', 'forward %', 'overhead %', 'loss %'],
  ];
  for (const threads of THREADS) {
    // fetch from the worker's cache: every blob of the pool read once, as a trial that misses nothing
    const fetch = await best(async () => {
      for (const blob of [m.base.blob, ...m.vectors.map((v) => v.blob)]) await pool.read(blob, 0, blob.bytes, scratch);
    });
    const merge = await best(() => mergeInto(pool, weighting, dest, undefined, threads));
    const merged = merge.value;
    const session = await best(async () => {
      const s = await createMergedSession(loss, merged, 'cpu', threads);
      return s;
    });
    const lm = new SessionModel(session.value, { ...m.model, vocab: V }, B * T);
    await lm.tokenLogProbs(seqs); // warm
    const evalS = (await best(() => lm.tokenLogProbs(seqs))).s;
    await session.value.release();
    const plain = await ort.InferenceSession.create(graphBytes, {
      executionProviders: ['cpu'],
      graphOptimizationLevel: 'all',
      intraOpNumThreads: threads,
      externalData: merged.map((data, i) => ({ path: partName(i), data })),
    });
    await plain.run({ input_ids: ids }, ['logits']); // warm
    const fwdS = (await best(() => plain.run({ input_ids: ids }, ['logits']))).s;
    await plain.release();
    const lossS = Math.max(0, evalS - fwdS);
    const trial = fetch.s + merge.s + session.s + evalS;
    const pct = (x: number) => `${((100 * x) / trial).toFixed(0)}%`;
    rows.push([
      threads,
      fetch.s.toFixed(2),
      merge.s.toFixed(2),
      session.s.toFixed(2),
      fwdS.toFixed(2),
      lossS.toFixed(2),
      trial.toFixed(2),
      pct(fwdS),
      pct(trial - fwdS),
      pct(lossS),
    ]);
  }
  await pool.close();
  const rss = process.resourceUsage().maxRSS * 1024;
  process.stdout.write(
    `one trial, synthetic fp16 LM: ${(PARAMS / 1e6).toFixed(0)}M parameters (${(m.weightsBytes / 2 ** 30).toFixed(2)} GiB), vocab ${V}, dim ${D}, ` +
      `hidden ${F}, ${L} blocks, ${K} vectors, batch ${B} × ${T} tokens, CPU, best of ${REPEAT} (node ${process.version})\n` +
      `models generated in ${genS.toFixed(1)} s, pool built in ${buildS.toFixed(1)} s; peak RSS ${(rss / 2 ** 30).toFixed(2)} GiB = ` +
      `${(rss / m.weightsBytes).toFixed(1)}× the model (the whole run: plain and loss sessions included)\n${table(rows)}\n`,
  );
} finally {
  await rm(dir, { recursive: true, force: true });
}
