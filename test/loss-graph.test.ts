import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { readEvalSet } from '../shared/eval-set.js';
import { DEFAULT_FAMILY_SHAPE, loadFamilyParams } from '../shared/family/build.js';
import { type FamilyParams, forward, referenceNll } from '../shared/family/model.js';
import { familyToOnnx } from '../shared/family/to-onnx.js';
import { intAttr, node, writeModel } from '../shared/onnx/build.js';
import { DataType } from '../shared/onnx/dtype.js';
import { decodeModel, encodeModel, type ModelProto, toNumber } from '../shared/onnx/proto.js';
import { evaluateNll } from '../worker/eval/evaluate.js';
import { LOGPROBS_OUTPUT, TARGETS_INPUT, toLossGraph } from '../worker/eval/loss-graph.js';
import { type LmIo, SessionModel } from '../worker/eval/session-model.js';
import { createFileSession } from '../worker/eval/session.js';
import { limits } from './helpers/family.js';
import { useTempDir } from './helpers/temp.js';

const family = inject('family');
const tmp = useTempDir('loss');
const shape = DEFAULT_FAMILY_SHAPE;
const io: LmIo = { input: 'input_ids', output: 'logits', attentionMask: null, vocab: shape.vocab };
let params: FamilyParams;
let seqs: Int32Array[];

beforeAll(async () => {
  params = await loadFamilyParams(family.base);
  seqs = [];
  for (const path of Object.values(family.dev)) seqs.push(...(await readEvalSet(path, limits)));
});

/** Per token of `seq`: the reference ln p(seq[t] | seq[<t]) (float64) and max_v |logit| at t − 1. */
function reference(seq: Int32Array): { lp: number[]; maxAbs: number[] } {
  const V = shape.vocab;
  const { logits } = forward(shape, params, seq);
  const lp: number[] = [];
  const maxAbs: number[] = [];
  for (let t = 1; t < seq.length; t++) {
    const row = logits.subarray((t - 1) * V, t * V);
    const max = Math.max(...row);
    const z = row.reduce((a, l) => a + Math.exp(l - max), 0);
    lp.push(row[seq[t]!]! - max - Math.log(z));
    maxAbs.push(Math.max(...row.map(Math.abs)));
  }
  return { lp, maxAbs };
}

let files = 0;
async function write(model: ModelProto): Promise<string> {
  const path = join(tmp, `model-${files++}.onnx`);
  await writeModel(path, model);
  return path;
}

/** The family model whose output `logits` is cast to `to` (an ONNX data type) at the end. */
function withLogitsOf(to: number, name: string): ModelProto {
  const m = familyToOnnx(shape, params);
  const g = m.graph!;
  g.node!.at(-1)!.output = ['logits_f32'];
  g.node!.push(node('Cast', ['logits_f32'], ['logits'], [intAttr('to', to)]));
  g.output![0]!.type!.tensorType!.elemType = to;
  g.name = name;
  return m;
}

/** Scores `model` and checks every token against the reference within `tol(maxAbsLogit)`. */
async function checkTokens(path: string, tol: (maxAbs: number) => number): Promise<void> {
  const session = await createFileSession(path, 'cpu');
  try {
    const got = await new SessionModel(session, io, 300).tokenLogProbs(seqs);
    seqs.forEach((seq, i) => {
      const ref = reference(seq);
      expect(got[i]!.length).toBe(seq.length - 1);
      ref.lp.forEach((r, t) => {
        expect(Math.abs(got[i]![t]! - r)).toBeLessThanOrEqual(tol(ref.maxAbs[t]!));
      });
    });
  } finally {
    await session.release();
  }
}

/**
 * The NLL of the dev sets under a graph with 16-bit logits, against the fp32 reference. Rounding a
 * logit l to a format with unit roundoff u moves it by at most u·|l|; ln p(y) = l_y − logsumexp(l)
 * and logsumexp moves by at most max_v |Δl_v|, so each token's log-prob (and so their mean, the
 * NLL) moves by at most 2u·max_v |l_v|. 1e-5 covers the fp32 forward pass (1e-4 is the test
 * suite's bound against the reference at fp32; here it is measured ~3e-6).
 */
async function checkRounded(to: number, u: number): Promise<void> {
  const path = await write(withLogitsOf(to, `logits-${to}`));
  const bound = (maxAbs: number) => 2 * u * maxAbs + 1e-5;
  await checkTokens(path, bound);
  const session = await createFileSession(path, 'cpu');
  try {
    const { nll, tokens } = await evaluateNll(session, seqs, io);
    const meanBound = seqs.reduce((a, s) => a + reference(s).maxAbs.reduce((b, m) => b + bound(m), 0), 0) / tokens;
    const ref = referenceNll(shape, params, seqs);
    expect(Math.abs(nll - ref)).toBeLessThanOrEqual(meanBound);
    expect(Math.abs(nll - ref)).toBeGreaterThan(0); // the logits really were rounded
  } finally {
    await session.release();
  }
}

describe('per-token loss inside ONNX Runtime', () => {
  it("loss - the transformed family graph gives the reference's log-prob of every token within 1e-4", async () => {
    await checkTokens(family.base, () => 1e-4);
  });

  it('loss - only [batch, seq] log-probs leave the runtime: the logits and every other output are gone', async () => {
    const m = familyToOnnx(shape, params);
    const g = m.graph!;
    // stand-ins for the present.* outputs of real exports: one the loss needs (h), one it does not
    g.node!.push(node('Mul', ['h', 'h'], ['extra']));
    g.output!.push(
      { name: 'h', type: { tensorType: { elemType: DataType.FLOAT } } },
      { name: 'extra', type: { tensorType: { elemType: DataType.FLOAT } } },
    );
    const path = await write(m);
    const session = await createFileSession(path, 'cpu');
    try {
      expect(session.outputNames).toEqual([LOGPROBS_OUTPUT]);
      expect(session.inputNames).toEqual(['input_ids', TARGETS_INPUT]);
      const r = await session.run({
        input_ids: new ort.Tensor('int64', BigInt64Array.of(1n, 2n, 3n), [1, 3]),
        [TARGETS_INPUT]: new ort.Tensor('int64', BigInt64Array.of(2n, 3n, 0n), [1, 3]),
      });
      expect(Object.keys(r)).toEqual([LOGPROBS_OUTPUT]);
      expect(r[LOGPROBS_OUTPUT]!.dims).toEqual([1, 3]);
    } finally {
      await session.release();
    }
    // nodes only the dropped outputs needed are gone (ONNX Runtime would run them all)
    const loss = decodeModel(toLossGraph(encodeModel(m)).bytes, 'loss graph');
    const produced = new Set(loss.graph!.node!.flatMap((n) => n.output ?? []));
    expect(produced.has('extra')).toBe(false);
    expect(produced.has('h')).toBe(true);
    // a session of the plain graph is refused with what to do instead
    const plain = await ort.InferenceSession.create(family.base);
    try {
      expect(() => new SessionModel(plain, io)).toThrow(`the session has no '${LOGPROBS_OUTPUT}' output (outputs: logits)`);
    } finally {
      await plain.release();
    }
  });

  it('loss - a graph with float16 logits evaluates, to the fp32 NLL within fp16 rounding of the logits', async () => {
    await checkRounded(DataType.FLOAT16, 2 ** -11);
  });

  it('loss - bfloat16 logits (which onnxruntime-node cannot return) are cast back inside the graph on the CPU provider', async () => {
    await checkRounded(DataType.BFLOAT16, 2 ** -8);
    // bfloat16 arithmetic before the logits is what the CPU provider cannot run: refused with what to do
    const m = withLogitsOf(DataType.BFLOAT16, 'bf16-add');
    const g = m.graph!;
    g.node!.at(-1)!.output = ['logits_bf16'];
    g.node!.push({ ...node('Add', ['logits_bf16', 'logits_bf16'], ['logits']), name: 'bf16_add' });
    await expect(createFileSession(await write(m), 'cpu')).rejects.toThrow(
      /Could not find an implementation for Add\(14\).*\(the CPU provider lacks this kernel, as it lacks most float16 and bfloat16 ones: evaluate on cuda, or export in float32\)$/,
    );
  });

  it('loss - opsets 11 to 17: Unsqueeze/Squeeze axes as attributes below 13, as inputs from 13; below 11 refused', async () => {
    for (const opset of [11, 12, 13, 17]) {
      const m = familyToOnnx(shape, params);
      m.opsetImport = [{ domain: '', version: opset }];
      const loss = decodeModel(toLossGraph(encodeModel(m)).bytes, 'loss graph');
      expect(loss.opsetImport!.map((o) => toNumber(o.version))).toEqual([opset]);
      for (const op of ['Unsqueeze', 'Squeeze']) {
        const n = loss.graph!.node!.find((x) => x.opType === op)!;
        expect(n.attribute!.map((a) => a.name)).toEqual(opset < 13 ? ['axes'] : []);
        expect(n.input).toHaveLength(opset < 13 ? 1 : 2);
      }
      await checkTokens(await write(m), () => 1e-4);
    }
    const old = familyToOnnx(shape, params);
    old.opsetImport = [{ domain: '', version: 10 }];
    expect(() => toLossGraph(encodeModel(old), { where: 'old.onnx' })).toThrow(
      'old.onnx: default-domain opset 10 is below 11, which the per-token loss needs (GatherElements); re-export the model with opset ≥ 13',
    );
  });

  it("loss - added names never collide with the graph's own", async () => {
    const m = familyToOnnx(shape, params);
    const g = m.graph!;
    // the graph already has values named like the ones the loss adds
    for (const n of g.node!) n.output = n.output!.map((o) => (o === 'h' ? 'optimer_log_softmax' : o));
    for (const n of g.node!) n.input = n.input!.map((i) => (i === 'h' ? 'optimer_log_softmax' : i));
    const loss = decodeModel(toLossGraph(encodeModel(m)).bytes, 'loss graph');
    const outs = loss.graph!.node!.flatMap((n) => n.output ?? []);
    expect(new Set(outs).size).toBe(outs.length);
    expect(outs.filter((o) => o.startsWith('optimer_log_softmax'))).toEqual(['optimer_log_softmax', 'optimer_log_softmax_1']);
    await checkTokens(await write(m), () => 1e-4);
    // the input and output optimer feeds and fetches by name cannot be renamed: refused
    g.node!.at(-1)!.output = [TARGETS_INPUT];
    g.output![0]!.name = TARGETS_INPUT;
    expect(() => toLossGraph(encodeModel(m), { logits: TARGETS_INPUT })).toThrow(
      `graph: the graph already uses the name '${TARGETS_INPUT}', which optimer's loss needs`,
    );
  });

  it("loss - a token id ≥ vocab is still refused with the eval set's message, before anything runs", async () => {
    const session = await createFileSession(family.base, 'cpu');
    try {
      const model = new SessionModel(session, io);
      for (const bad of [Int32Array.of(1, 64, 2), Int32Array.of(70, 1)]) {
        await expect(model.tokenLogProbs([Int32Array.of(1, 2, 3), bad])).rejects.toMatchObject({
          code: 'BAD_EVAL_SET',
          message: `token id ${bad.find((x) => x >= 64)} is not below the model's vocabulary size 64`,
        });
      }
    } finally {
      await session.release();
    }
  });
});
