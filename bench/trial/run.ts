/**
 * Per-trial overhead benchmark: trials as a worker runs them on a synthetic fp16 causal LM with a
 * large vocabulary (embedding, residual tanh-MLP blocks, LM head; weights stored in fp16 and cast
 * in the graph), for both ways the merged weights reach ONNX Runtime (TrialSessions): `inputs`
 * (one session per pool, the weights float32 graph inputs) and `initializers` (a session per
 * trial), at each thread count given. Each trial merges and evaluates the dev set (`--batches`
 * batches of `--batch` × `--seq` tokens) through the loss graph; the forward pass alone is the
 * same batches on a plain session of the same weights as initializers (logits out, prepacked: the
 * fastest ONNX Runtime does), so everything else, per-batch weight packing included, counts as
 * overhead. Each (feed, threads) runs in a child process of its own, for its own peak RSS; the
 * `inputs` child then times `--pairs` further trials each followed by the forward pass, so that
 * its share of the trial is measured under one load (the `initializers` row is set against that
 * child's forward pass).
 * Fetch (reading every blob of the pool once from the cache) happens once per study, not per trial.
 * Usage: npm run bench:trial -- [--vocab 32000] [--dim 1024] [--hidden 4096] [--layers 8]
 *   [--vectors 2] [--batch 2] [--seq 128] [--batches 1] [--threads 1,2] [--trials 3] [--pairs 2] [--rounds 1]
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import ort from 'onnxruntime-node';
import { table } from '../../cli/output.js';
import { uniformWeighting } from '../../shared/genome.js';
import { intAttr, node, tensor, valueInfo, writeModel } from '../../shared/onnx/build.js';
import { encodeFloats } from '../../shared/onnx/dtype.js';
import { partName } from '../../shared/pool/manifest.js';
import { buildPool } from '../../shared/pool/build.js';
import { Pool } from '../../shared/pool/reader.js';
import type { WeightFeed } from '../../shared/providers.js';
import { Rng } from '../../shared/rng.js';
import { SessionModel } from '../../worker/eval/session-model.js';
import { sessionOptions } from '../../worker/eval/session.js';
import { TrialSessions } from '../../worker/eval/trial-session.js';
import { ProviderGraphs, widenTo32 } from '../../worker/eval/widen.js';
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
    batches: { type: 'string', default: '1' },
    threads: { type: 'string', default: '1,2' },
    trials: { type: 'string', default: '3' },
    // the children run this many times in turn; each figure is its least (a noisy machine's swings)
    rounds: { type: 'string', default: '1' },
    // trials paired with a forward pass each in the inputs child
    pairs: { type: 'string', default: '2' },
    // internal: a child measuring one (feed, threads) on the pool in --pool
    child: { type: 'string' },
    pool: { type: 'string' },
  },
});
const [V, D, F, L, K, B, T, NB, TRIALS] = ['vocab', 'dim', 'hidden', 'layers', 'vectors', 'batch', 'seq', 'batches', 'trials'].map((k) =>
  Number(values[k as keyof typeof values]),
) as [number, number, number, number, number, number, number, number, number];
const ROUNDS = Math.max(1, Number(values.rounds));
const PAIRS = Math.max(1, Number(values.pairs));
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

/** The dev set: NB batches of B sequences of T random tokens. */
function devSet(): Int32Array[] {
  const rng = new Rng(5);
  return Array.from({ length: NB * B }, () => Int32Array.from({ length: T }, () => rng.int(V)));
}

/** weightings that differ per trial, as a search's do */
const weightingOf = (pool: Pool, i: number) =>
  uniformWeighting(new Map(pool.manifest.vectors.map((v, k) => [v.name, 0.3 + 0.1 * k + 0.05 * i])));

interface ChildResult {
  /** per trial: merge, session creation, evaluation (loss graph), seconds */
  trials: { merge: number; session: number; eval: number }[];
  /** `inputs` child only: further trials, each followed by the forward pass alone in the same process (same load) */
  pairs?: { merge: number; session: number; eval: number; forward: number }[];
  /** the peak before the forward pass's own session was made */
  maxRssBytes: number;
}

/**
 * One (feed, threads): TRIALS trials in a row, as a worker runs them. The `inputs` child then
 * makes the forward pass's session (after its peak RSS is taken) and runs `--pairs` more trials,
 * each followed by the forward pass alone: paired under the same load, on a machine whose load
 * swings more than the difference measured.
 */
async function trialChild(poolDir: string, feed: WeightFeed, threads: number): Promise<ChildResult> {
  const pool = await Pool.open(poolDir);
  const graphs = new ProviderGraphs(await pool.graphBytes(), pool.manifest.model, 'bench graph');
  const sessions = new TrialSessions();
  const seqs = devSet();
  const trial = async (i: number) => {
    const r = await sessions.run(
      pool,
      graphs,
      weightingOf(pool, i),
      { provider: 'cpu', weightFeed: feed, mergeThreads: threads, intraOpThreads: threads },
      async ({ session, io, weights }) => {
        const t0 = performance.now();
        await new SessionModel(session, { ...io, vocab: V }, B * T, undefined, undefined, weights).tokenLogProbs(seqs);
        return (performance.now() - t0) / 1000;
      },
    );
    if (r.weightFeed !== feed) throw new Error(`asked for ${feed}, got ${r.weightFeed}`);
    return { merge: r.timings.mergeMs / 1000, session: r.timings.sessionMs / 1000, eval: r.value };
  };
  const out: ChildResult['trials'] = [];
  for (let i = 0; i < TRIALS; i++) out.push(await trial(i));
  const maxRssBytes = process.resourceUsage().maxRSS * 1024;
  const pairs: NonNullable<ChildResult['pairs']> = [];
  if (feed === 'inputs') {
    const forward = await forwardPass(pool, threads, seqs);
    for (let j = 0; j < PAIRS; j++) pairs.push({ ...(await trial(TRIALS + j)), forward: await forward.run() });
    await forward.release();
  }
  await sessions.close();
  await pool.close();
  return { trials: out, ...(pairs.length > 0 && { pairs }), maxRssBytes };
}

/** The forward pass alone: the plain graph, weights as initializers (prepacked), logits out. */
async function forwardPass(pool: Pool, threads: number, seqs: Int32Array[]) {
  const bytes = await pool.graphBytes();
  const merged = await mergeInto(pool, weightingOf(pool, 0), allocateMerged(pool), undefined, threads);
  const session = await ort.InferenceSession.create(widenTo32(bytes, 'bench graph') ?? bytes, {
    ...sessionOptions('cpu', threads),
    externalData: merged.map((data, i) => ({ path: partName(i), data })),
  });
  const batches = Array.from({ length: NB }, (_, b) => {
    const rows = seqs.slice(b * B, (b + 1) * B);
    return new ort.Tensor('int64', BigInt64Array.from(rows.flatMap((s) => Array.from(s, BigInt))), [B, T]);
  });
  const output = pool.manifest.model.output;
  await session.run({ input_ids: batches[0]! }, [output]); // warm
  return {
    async run(): Promise<number> {
      const t0 = performance.now();
      for (const ids of batches) {
        const r = await session.run({ input_ids: ids }, [output]);
        r[output]!.dispose?.();
      }
      return (performance.now() - t0) / 1000;
    },
    release: () => session.release(),
  };
}

function spawnChild(args: string[]): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [fileURLToPath(import.meta.url), ...args], { maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`child ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve(JSON.parse(stdout.trim().split('\n').at(-1)!) as ChildResult);
    });
  });
}

const passOn = () =>
  ['vocab', 'dim', 'hidden', 'layers', 'vectors', 'batch', 'seq', 'batches', 'trials', 'pairs'].flatMap((k) => [
    `--${k}`,
    String(values[k as keyof typeof values]),
  ]);

if (values.child) {
  const [kind, threads] = values.child.split(':') as [string, string];
  const r = await trialChild(values.pool!, kind as WeightFeed, Number(threads));
  process.stdout.write(`${JSON.stringify(r)}\n`);
  process.exit(0);
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
  const poolDir = join(dir, 'pool');
  const pool = await Pool.open(poolDir);
  const m = pool.manifest;
  // fetch from the worker's cache, once per study: every blob of the pool read once
  const scratch = new Uint8Array(Math.max(...[m.base.blob, ...m.vectors.map((v) => v.blob)].map((b) => b.bytes)));
  const f0 = performance.now();
  for (const blob of [m.base.blob, ...m.vectors.map((v) => v.blob)]) await pool.read(blob, 0, blob.bytes, scratch);
  const fetchS = (performance.now() - f0) / 1000;
  await pool.close();
  const rows: (string | number)[][] = [
    [
      'threads',
      'weights as',
      'session s (once per pool)',
      'merge s',
      'session s',
      'eval s',
      'forward s',
      'trial s',
      'all but forward %',
      'loss + packing %',
      'peak RSS × model',
    ],
  ];
  const pct = (x: number, of: number) => `${((100 * x) / of).toFixed(0)}%`;
  const FEEDS = ['inputs', 'initializers'] as const;
  const med = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;
  for (const threads of THREADS) {
    // both feeds in turn, --rounds times, so that both see the same load swings; each figure is its
    // least over the rounds (of its median in each)
    type Figures = { merge: number; session: number; eval: number; forward: number; overhead: number; first: number; rss: number };
    const runs = new Map<(typeof FEEDS)[number], Figures[]>(FEEDS.map((f) => [f, []]));
    for (let round = 0; round < ROUNDS; round++) {
      let forward = Number.NaN;
      for (const feed of FEEDS) {
        const r = await spawnChild([...passOn(), '--pool', poolDir, '--child', `${feed}:${threads}`]);
        // steady state: trials after the first (the first also makes a pool's session for inputs)
        const steady = r.pairs ?? r.trials.slice(1);
        if (r.pairs) forward = med(r.pairs.map((p) => p.forward));
        const total = (t: { merge: number; session: number; eval: number }) => t.merge + t.session + t.eval;
        runs.get(feed)!.push({
          merge: med(steady.map((t) => t.merge)),
          session: med(steady.map((t) => t.session)),
          eval: med(steady.map((t) => t.eval)),
          forward,
          // paired where the child measured pairs; else against the other child's forward pass
          overhead: r.pairs ? med(r.pairs.map((p) => 1 - p.forward / total(p))) : med(steady.map((t) => 1 - forward / total(t))),
          first: r.trials[0]!.session,
          rss: r.maxRssBytes,
        });
      }
    }
    for (const feed of FEEDS) {
      const least = (k: keyof Figures) => Math.min(...runs.get(feed)!.map((x) => x[k]));
      const [merge, session, evalS, forward] = [least('merge'), least('session'), least('eval'), least('forward')];
      const trial = merge + session + evalS;
      rows.push([
        threads,
        feed,
        feed === 'inputs' ? least('first').toFixed(2) : '-',
        merge.toFixed(2),
        session.toFixed(2),
        evalS.toFixed(2),
        forward.toFixed(2),
        trial.toFixed(2),
        pct(least('overhead'), 1),
        pct(Math.max(0, evalS - forward), trial),
        (Math.max(...runs.get(feed)!.map((x) => x.rss)) / m.weightsBytes).toFixed(1),
      ]);
    }
  }
  process.stdout.write(
    `trials, synthetic fp16 LM: ${(PARAMS / 1e6).toFixed(0)}M parameters (${(m.weightsBytes / 2 ** 30).toFixed(2)} GiB), vocab ${V}, dim ${D}, ` +
      `hidden ${F}, ${L} blocks, ${K} vectors; dev set ${NB} batch${NB === 1 ? '' : 'es'} of ${B} × ${T} tokens; CPU; ` +
      `median of trials 2..${TRIALS}${ROUNDS > 1 ? `, least of ${ROUNDS} rounds (peak RSS: most)` : ''} (node ${process.version})\n` +
      `models generated in ${genS.toFixed(1)} s, pool built in ${buildS.toFixed(1)} s; fetch from the cache (once per study) ${fetchS.toFixed(2)} s\n` +
      `${table(rows)}\n`,
  );
} finally {
  await rm(dir, { recursive: true, force: true });
}
