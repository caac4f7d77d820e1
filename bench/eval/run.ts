/**
 * Evaluation benchmark: the per-token loss inside ONNX Runtime (the loss graph) against the
 * logits leaving the runtime and a log-softmax in JavaScript (the path before it), on one
 * synthetic causal LM with a large vocabulary, the same weights, session options and batch.
 * Usage: npm run bench:eval -- [--vocab 32768] [--dim 64] [--batch 8] [--seq 128] [--repeat 5]
 */
import { parseArgs } from 'node:util';
import ort from 'onnxruntime-node';
import { table } from '../../cli/output.js';
import { intAttr, node, tensor, valueInfo } from '../../shared/onnx/build.js';
import { encodeModel } from '../../shared/onnx/proto.js';
import { Rng } from '../../shared/rng.js';
import { toLossGraph } from '../../worker/eval/loss-graph.js';
import { SessionModel } from '../../worker/eval/session-model.js';

const { values } = parseArgs({
  options: {
    vocab: { type: 'string', default: '32768' },
    dim: { type: 'string', default: '64' },
    batch: { type: 'string', default: '8' },
    seq: { type: 'string', default: '128' },
    repeat: { type: 'string', default: '5' },
  },
});
const V = Number(values.vocab);
const D = Number(values.dim);
const B = Number(values.batch);
const T = Number(values.seq);
const REPEAT = Number(values.repeat);

/** logits = tanh(E[ids]·A) · U + c: the shape of an LM head, small enough to build in memory. */
function syntheticLm(): Uint8Array {
  const rng = new Rng(7);
  const f32 = (n: number, scale: number): Uint8Array => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = rng.normal() * scale;
    return new Uint8Array(a.buffer);
  };
  return encodeModel({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 17 }],
    graph: {
      name: 'bench-lm',
      initializer: [
        tensor('E', 'float32', [V, D], f32(V * D, 1)),
        tensor('A', 'float32', [D, D], f32(D * D, 1 / Math.sqrt(D))),
        tensor('U', 'float32', [D, V], f32(D * V, 3 / Math.sqrt(D))),
        tensor('c', 'float32', [V], f32(V, 0.5)),
      ],
      node: [
        node('Gather', ['E', 'input_ids'], ['emb'], [intAttr('axis', 0)]),
        node('MatMul', ['emb', 'A'], ['za']),
        node('Tanh', ['za'], ['h']),
        node('MatMul', ['h', 'U'], ['hu']),
        node('Add', ['hu', 'c'], ['logits']),
      ],
      input: [valueInfo('input_ids', 'int64', ['batch', 'seq'])],
      output: [valueInfo('logits', 'float32', ['batch', 'seq', V])],
    },
  });
}

/** The evaluation before the loss graph (SessionModel until then): logits out, log-softmax in JS. */
async function logitsInJs(session: ort.InferenceSession, seqs: Int32Array[]): Promise<Float64Array[]> {
  const len = seqs[0]!.length;
  const ids = new BigInt64Array(seqs.length * len);
  seqs.forEach((seq, b) => {
    for (let t = 0; t < seq.length; t++) ids[b * len + t] = BigInt(seq[t]!);
  });
  const result = await session.run({ input_ids: new ort.Tensor('int64', ids, [seqs.length, len]) }, ['logits']);
  const logits = result.logits!;
  const vocab = logits.dims[2]!;
  const data = logits.data as Float32Array;
  const out = seqs.map((seq, b) => {
    const lp = new Float64Array(seq.length - 1);
    for (let t = 1; t < seq.length; t++) {
      const y = seq[t]!;
      const off = (b * len + t - 1) * vocab;
      let max = -Infinity;
      for (let v = 0; v < vocab; v++) if (data[off + v]! > max) max = data[off + v]!;
      let z = 0;
      for (let v = 0; v < vocab; v++) z += Math.exp(data[off + v]! - max);
      lp[t - 1] = -(Math.log(z) + max - data[off + y]!);
    }
    return lp;
  });
  logits.dispose();
  return out;
}

async function time(fn: () => Promise<unknown>): Promise<number> {
  await fn(); // warm
  const times: number[] = [];
  for (let r = 0; r < REPEAT; r++) {
    const t0 = performance.now();
    await fn();
    times.push(performance.now() - t0);
  }
  return Math.min(...times);
}

const graph = syntheticLm();
const options: ort.InferenceSession.SessionOptions = { executionProviders: ['cpu'], graphOptimizationLevel: 'all' };
const plain = await ort.InferenceSession.create(graph, options);
const loss = await ort.InferenceSession.create(toLossGraph(graph).bytes, options);
const rng = new Rng(11);
const seqs = Array.from({ length: B }, () => Int32Array.from({ length: T }, () => rng.int(V)));
const io = { input: 'input_ids', output: 'logits', attentionMask: null, vocab: V };
const model = new SessionModel(loss, io, B * T);

const a = await logitsInJs(plain, seqs);
const b = await model.tokenLogProbs(seqs);
let maxDiff = 0;
a.forEach((lp, i) => {
  lp.forEach((x, t) => {
    maxDiff = Math.max(maxDiff, Math.abs(x - b[i]![t]!));
  });
});
const tA = await time(() => logitsInJs(plain, seqs));
const tB = await time(() => model.tokenLogProbs(seqs));
// forward pass alone, for scale: the loss graph's session computes the same logits first
const tFwd = await time(() =>
  plain.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(seqs.flatMap((s) => Array.from(s, BigInt))), [B, T]) }, ['logits']),
);
await plain.release();
await loss.release();

const mb = (bytes: number) => (bytes / 2 ** 20).toPrecision(3);
const ms = (t: number) => t.toFixed(1);
const rows: (string | number)[][] = [
  ['path', 'ms per batch', 'MiB out of the runtime per batch'],
  ['(a) logits out + JS log-softmax', ms(tA), mb(B * T * V * 4)],
  ['(b) loss graph (log-softmax + gather in ORT)', ms(tB), mb(B * T * 4)],
  ['    forward pass alone (logits out, no softmax)', ms(tFwd), mb(B * T * V * 4)],
];
process.stdout.write(
  `evaluation, vocab ${V}, dim ${D}, batch ${B}×${T} tokens, CPU provider, best of ${REPEAT} (node ${process.version}, onnxruntime-node ${ort.env.versions.node ?? '?'})\n`,
);
process.stdout.write(`${table(rows)}\n`);
process.stdout.write(`(a) / (b): ${(tA / tB).toFixed(1)}×; max |log-prob (a) − (b)| = ${maxDiff.toExponential(2)}\n`);
