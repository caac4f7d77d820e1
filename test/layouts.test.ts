import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { DEFAULT_FAMILY_SHAPE, loadFamilyParams } from '../shared/family/build.js';
import { familyToOnnx } from '../shared/family/to-onnx.js';
import { type FamilyParams, referenceNll } from '../shared/family/model.js';
import { type DtypeName, decodeFloats, encodeFloats } from '../shared/onnx/dtype.js';
import { node, tensor, valueInfo } from '../shared/onnx/build.js';
import { writeModel } from '../shared/onnx/build.js';
import type { GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto } from '../shared/onnx/proto.js';
import { buildPool } from '../shared/pool/build.js';
import { parseManifest, type ModelDescription } from '../shared/pool/manifest.js';
import ort from 'onnxruntime-node';
import { buildFeeds } from '../worker/eval/feeds.js';
import { SessionModel } from '../worker/eval/session-model.js';
import { createFileSession } from '../worker/eval/session.js';
import { readSeqs } from './helpers/family.js';
import { useTempDir } from './helpers/temp.js';

const family = inject('family');
const cli = inject('cli');
const tmp = useTempDir('layouts');
const S = DEFAULT_FAMILY_SHAPE;
/** the family's embedding (dim 16) seen as 2 KV heads of 8 */
const HEADS = 2;
const HEAD_DIM = S.dim / HEADS;
const CKPTS = ['ja', 'zh'] as const;

function optimer(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cli, ...args], { timeout: 120_000, cwd: tmp }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** How a test model's inputs look; every input is consumed so that a wrong feed fails or changes the NLL. */
interface Layout {
  /** dim names of batch and sequence (Optimum and genai: batch_size, sequence_length) */
  batch?: string;
  seq?: string;
  /** the ids input under another name (given with --input-name) */
  inputName?: string;
  ids?: 'int64' | 'int32';
  mask?: 'int64' | 'int32';
  positionIds?: 'int64' | 'int32';
  past?: {
    layers: number;
    type: 'float32' | 'float16' | 'bfloat16';
    heads?: number | string;
    headDim?: number | string;
    pastLen?: string | number;
  };
  /** Optimum's merged decoder: an If on use_cache_branch whose then-branch (with a cache) gives other logits */
  useCacheBranch?: boolean;
  /** an input optimer does not know */
  extra?: ValueInfoProto;
}

function constant(name: string, dtype: DtypeName, dims: number[], values: number[]): NodeProto {
  let raw: Uint8Array;
  if (dtype === 'int64') raw = new Uint8Array(BigInt64Array.from(values.map(BigInt)).buffer);
  else {
    raw = new Uint8Array(values.length * 4);
    encodeFloats('float32', Float32Array.from(values), raw, values.length);
  }
  return node('Constant', [], [name], [{ name: 'value', type: 4, t: tensor(name, dtype, dims, raw) }]);
}

const cast = (from: string, to: string, code: number): NodeProto => node('Cast', [from], [to], [{ name: 'to', type: 2, i: code }]);
const CODE = { float32: 1, float16: 10, bfloat16: 16 } as const;

/**
 * The family model with a layout's inputs, each really consumed:
 *   logits = logits_raw · (1 + |mask − 1| + |position_ids − (0..len−1)| + Σ past_len)
 * (1 on every real token when the feeds are right; padding rows are never scored), the past
 * Concat'ed on axis 2 with the embeddings as [B, heads, len, head_dim] (so heads, head_dim and the
 * float type must match) and output as present.{i}.key|value, and with use_cache_branch an If
 * whose then-branch (the cache) triples the logits.
 */
function withLayout(params: FamilyParams, l: Layout): ModelProto {
  const model = familyToOnnx(S, params);
  const g = model.graph!;
  const batch = l.batch ?? 'batch';
  const seq = l.seq ?? 'seq';
  const ids = l.inputName ?? 'input_ids';
  const nodes = g.node!;
  if (ids !== 'input_ids') for (const n of nodes) n.input = n.input!.map((x) => (x === 'input_ids' ? ids : x));
  nodes.find((n) => n.output![0] === 'logits')!.output = ['logits_raw'];
  const inputs: ValueInfoProto[] = [valueInfo(ids, l.ids ?? 'int64', [batch, seq])];
  const outputs: ValueInfoProto[] = [];
  const terms: string[] = [];
  nodes.push(
    constant('c_one', 'float32', [], [1]),
    constant('c_idx1', 'int64', [], [1]),
    node('Shape', [ids], ['ids_shape']),
    node('Gather', ['ids_shape', 'c_idx1'], ['seq_len']),
  );
  if (l.mask) {
    inputs.push(valueInfo('attention_mask', l.mask, [batch, l.past ? 'total_sequence_length' : seq]));
    nodes.push(cast('attention_mask', 'mask_f', 1), node('Sub', ['mask_f', 'c_one'], ['mask_d']), node('Abs', ['mask_d'], ['t_mask']));
    terms.push('t_mask');
  }
  if (l.positionIds) {
    inputs.push(valueInfo('position_ids', l.positionIds, [batch, seq]));
    nodes.push(
      constant('c_zero_i', 'int64', [], [0]),
      constant('c_one_i', 'int64', [], [1]),
      node('Range', ['c_zero_i', 'seq_len', 'c_one_i'], ['range']),
      cast('range', 'range_f', 1),
      cast('position_ids', 'pos_f', 1),
      node('Sub', ['pos_f', 'range_f'], ['pos_d']),
      node('Abs', ['pos_d'], ['t_pos']),
    );
    terms.push('t_pos');
  }
  if (l.past) {
    const p = l.past;
    nodes.push(constant('kv_shape', 'int64', [4], [0, 0, HEADS, HEAD_DIM]), constant('c_idx2', 'int64', [], [2]));
    for (const [src, kind] of [
      ['emb', 'key'],
      ['prev', 'value'],
    ] as const) {
      nodes.push(
        node('Reshape', [src, 'kv_shape'], [`${kind}_4d`]),
        node('Transpose', [`${kind}_4d`], [`${kind}_bhsd`], [{ name: 'perm', type: 7, ints: [0, 2, 1, 3] }]),
      );
      if (p.type !== 'float32') nodes.push(cast(`${kind}_bhsd`, `${kind}_cur`, CODE[p.type]));
    }
    for (let i = 0; i < p.layers; i++) {
      for (const kind of ['key', 'value']) {
        const name = `past_key_values.${i}.${kind}`;
        const present = `present.${i}.${kind}`;
        inputs.push(valueInfo(name, p.type, [batch, p.heads ?? HEADS, p.pastLen ?? 'past_sequence_length', p.headDim ?? HEAD_DIM]));
        outputs.push(valueInfo(present, p.type, [batch, p.heads ?? HEADS, 'total_sequence_length', p.headDim ?? HEAD_DIM]));
        const cur = p.type === 'float32' ? `${kind}_bhsd` : `${kind}_cur`;
        nodes.push(
          node('Concat', [name, cur], [present], [{ name: 'axis', type: 2, i: 2 }]),
          node('Shape', [present], [`${present}_shape`]),
          node('Gather', [`${present}_shape`, 'c_idx2'], [`${present}_len`]),
          node('Sub', [`${present}_len`, 'seq_len'], [`${present}_past`]),
          cast(`${present}_past`, `${present}_t`, 1),
        );
        terms.push(`${present}_t`);
      }
    }
  }
  let factor = 'c_one';
  for (const [i, t] of terms.entries()) {
    nodes.push(node('Add', [factor, t], [`factor_${i}`]));
    factor = `factor_${i}`;
  }
  nodes.push(constant('c_last', 'int64', [1], [-1]), node('Unsqueeze', [factor, 'c_last'], ['factor_u']));
  const logitsInfo = valueInfo('logits', 'float32', [batch, seq, S.vocab]);
  if (l.useCacheBranch) {
    inputs.push(valueInfo('use_cache_branch', 'bool', [1]));
    nodes.push(node('Mul', ['logits_raw', 'factor_u'], ['logits_scaled']));
    const branch = (name: string, body: NodeProto[], out: string): GraphProto => ({
      name,
      node: body,
      output: [valueInfo(out, 'float32', [batch, seq, S.vocab])],
    });
    nodes.push(
      node(
        'If',
        ['use_cache_branch'],
        ['logits'],
        [
          {
            name: 'then_branch',
            type: 5,
            g: branch(
              'with_past',
              [constant('c_three', 'float32', [], [3]), node('Mul', ['logits_scaled', 'c_three'], ['logits_with_past'])],
              'logits_with_past',
            ),
          },
          {
            name: 'else_branch',
            type: 5,
            g: branch('without_past', [node('Identity', ['logits_scaled'], ['logits_no_past'])], 'logits_no_past'),
          },
        ],
      ),
    );
  } else {
    nodes.push(node('Mul', ['logits_raw', 'factor_u'], ['logits']));
  }
  if (l.extra) inputs.push(l.extra);
  g.input = inputs;
  g.output = [logitsInfo, ...outputs];
  return model;
}

interface Written {
  base: string;
  checkpoints: Record<string, string>;
  params: Record<string, FamilyParams>;
}

/** The family's base and the CKPTS checkpoints, written in a layout (then through `edit`, e.g. to 16 bits). */
async function writeLayout(name: string, l: Layout, edit: (m: ModelProto) => ModelProto = (m) => m): Promise<Written> {
  const out: Written = { base: join(tmp, `${name}-base.onnx`), checkpoints: {}, params: {} };
  out.params.base = await loadFamilyParams(family.base);
  await writeModel(out.base, edit(withLayout(out.params.base, l)));
  for (const c of CKPTS) {
    out.params[c] = await loadFamilyParams(family.checkpoints[c]!);
    out.checkpoints[c] = join(tmp, `${name}-${c}.onnx`);
    await writeModel(out.checkpoints[c], edit(withLayout(out.params[c], l)));
  }
  return out;
}

/** `optimer pool build` of a written layout into `<name>-pool`. */
async function poolOf(name: string, w: Written, ...extra: string[]) {
  const pool = join(tmp, `${name}-pool`);
  const built = await optimer(
    'pool',
    'build',
    '--base',
    w.base,
    ...CKPTS.flatMap((c) => ['--vector', `${c}=${w.checkpoints[c]}`]),
    '--out',
    pool,
    ...extra,
  );
  return { pool, built };
}

/** `optimer eval` of each merge on the dev sets gives the float64 reference NLL of its parameters, within 1e-4. */
async function expectReferenceNlls(pool: string, merges: [weights: string, params: FamilyParams][]): Promise<void> {
  const sets = Object.keys(seqs).flatMap((s) => ['--set', `${s}=${family.dev[s]}`]);
  for (const [weights, params] of merges) {
    const r = await optimer('eval', '--pool', pool, '--weights', weights, ...sets, '--batch-tokens', '300', '--json');
    expect(r.stderr).toBe('');
    // the CPU's default: one session with the weights as inputs (no silent fallback to initializers)
    expect(JSON.parse(r.stdout).weightFeed).toBe('inputs');
    const scores = JSON.parse(r.stdout).scores as { name: string; score: number }[];
    for (const s of scores) expect(Math.abs(s.score - referenceNll(S, params, seqs[s.name]!))).toBeLessThan(1e-4);
  }
}

let seqs: Record<string, number[][]>;
beforeAll(async () => {
  seqs = { ja: await readSeqs(family.dev.ja!), code: await readSeqs(family.dev.code!) };
});

const layouts: { name: string; layout: Layout; model: Partial<ModelDescription> }[] = [
  {
    name: 'plain with int32 ids and mask, ids named with --input-name',
    layout: { inputName: 'tokens', ids: 'int32', mask: 'int32' },
    model: { input: 'tokens', attentionMask: 'attention_mask', inputType: 'int32', attentionMaskType: 'int32' },
  },
  {
    name: "Optimum's decoder with KV cache (text-generation-with-past)",
    layout: { batch: 'batch_size', seq: 'sequence_length', mask: 'int64', positionIds: 'int64', past: { layers: 2, type: 'float32' } },
    model: {
      attentionMask: 'attention_mask',
      positionIds: { name: 'position_ids', type: 'int64' },
      past: [0, 1].flatMap((i) =>
        ['key', 'value'].map((k) => ({ name: `past_key_values.${i}.${k}`, type: 'float32' as const, heads: HEADS, headDim: HEAD_DIM })),
      ),
    },
  },
  {
    name: "Optimum's merged decoder (If on use_cache_branch)",
    layout: {
      batch: 'batch_size',
      seq: 'sequence_length',
      mask: 'int64',
      positionIds: 'int64',
      past: { layers: 2, type: 'float32' },
      useCacheBranch: true,
    },
    model: { useCacheBranch: 'use_cache_branch', positionIds: { name: 'position_ids', type: 'int64' } },
  },
  {
    name: "onnxruntime-genai's model builder, float16 KV cache, int32 mask",
    layout: { batch: 'batch_size', seq: 'sequence_length', mask: 'int32', positionIds: 'int64', past: { layers: 1, type: 'float16' } },
    model: {
      attentionMaskType: 'int32',
      past: ['key', 'value'].map((k) => ({ name: `past_key_values.0.${k}`, type: 'float16' as const, heads: HEADS, headDim: HEAD_DIM })),
    },
  },
];

describe('layouts', () => {
  for (const { name, layout, model } of layouts) {
    it(`layouts - ${name}: pool build finds the inputs, eval of 0 weights is the base, one-hot the checkpoint`, async () => {
      const dir = name.replace(/[^a-z0-9]+/gi, '-').toLowerCase();
      const w = await writeLayout(dir, layout);
      const { pool, built } = await poolOf(dir, w, ...(layout.inputName ? ['--input-name', layout.inputName] : []), '--json');
      expect(built.stderr).toBe('');
      expect(built.code).toBe(0);
      const manifest = JSON.parse(await readFile(join(pool, 'manifest.json'), 'utf8'));
      expect(manifest.model).toMatchObject({ output: 'logits', vocab: S.vocab, contextLength: S.contextLength, ...model });
      await expectReferenceNlls(pool, [
        ['', w.params.base!],
        ['ja=1', w.params.ja!],
      ]);
    });
  }

  it("layouts - PyTorch's shared initializers: a base exporting B as an Identity of an equal A pools with checkpoints where they differ", async () => {
    // torch.onnx.export keeps one of two equal parameters and names the other an Identity of it
    const share = (m: ModelProto): ModelProto => {
      const g = m.graph!;
      return {
        ...m,
        graph: {
          ...g,
          initializer: g.initializer!.filter((t) => t.name !== 'B'),
          node: [node('Identity', ['A'], ['B']), ...g.node!],
        },
      };
    };
    const w = await writeLayout('torch-shared', {});
    const sharedBase = { ...w.params.base!, B: w.params.base!.A };
    await writeModel(w.base, share(withLayout(sharedBase, {})));
    const { pool, built } = await poolOf('torch-shared', w, '--json');
    expect(built.stderr).toBe('');
    expect(built.code).toBe(0);
    const manifest = JSON.parse(await readFile(join(pool, 'manifest.json'), 'utf8'));
    expect(manifest.tensors.map((t: { name: string }) => t.name)).toContain('B');
    // the base evaluates as exported (B = A); a checkpoint's B, which differs, is merged on its own
    await expectReferenceNlls(pool, [
      ['', sharedBase],
      ['ja=1', w.params.ja!],
    ]);
  });

  it('layouts - buildFeeds feeds what the graph needs; a wrong feed fails or changes the logits', async () => {
    const w = await writeLayout('consume', {
      mask: 'int64',
      positionIds: 'int64',
      past: { layers: 1, type: 'float32' },
      useCacheBranch: true,
    });
    const io: ModelDescription = {
      input: 'input_ids',
      output: 'logits',
      attentionMask: 'attention_mask',
      vocab: S.vocab,
      contextLength: S.contextLength,
      positionIds: { name: 'position_ids', type: 'int64' },
      past: ['key', 'value'].map((k) => ({ name: `past_key_values.0.${k}`, type: 'float32' as const, heads: HEADS, headDim: HEAD_DIM })),
      useCacheBranch: 'use_cache_branch',
    };
    // the loss graph for the NLL; the graph as exported to look at its logits
    const session = await createFileSession(w.base, 'cpu');
    const raw = await ort.InferenceSession.create(w.base);
    const rows = seqs.ja!.slice(0, 3).map((s) => Int32Array.from(s));
    const len = Math.max(...rows.map((r) => r.length));
    const logits = async (edit: (f: Record<string, ort.Tensor>) => void = () => undefined): Promise<Float32Array> => {
      const feeds = buildFeeds(io, rows, len);
      edit(feeds);
      const r = await raw.run(feeds, ['logits']);
      return r.logits!.data as Float32Array;
    };
    const nll = async (model: ModelDescription): Promise<number> => {
      const lps = await new SessionModel(session, model).tokenLogProbs(rows);
      return -lps.reduce((a, lp) => a + lp.reduce((x, y) => x + y, 0), 0) / lps.reduce((a, lp) => a + lp.length, 0);
    };
    /** the largest difference on the rows' real tokens */
    const diff = (a: Float32Array, b: Float32Array): number => {
      let m = 0;
      rows.forEach((r, i) => {
        for (let t = 0; t < r.length; t++)
          for (let v = 0; v < S.vocab; v++) m = Math.max(m, Math.abs(a[(i * len + t) * S.vocab + v]! - b[(i * len + t) * S.vocab + v]!));
      });
      return m;
    };
    try {
      expect(
        Math.abs(
          (await nll(io)) -
            referenceNll(
              S,
              w.params.base!,
              rows.map((r) => Array.from(r)),
            ),
        ),
      ).toBeLessThan(1e-4);
      const ok = await logits();
      const B = rows.length;
      const bigints = (n: number, f: (i: number) => number) => BigInt64Array.from({ length: n }, (_, i) => BigInt(f(i)));
      const changed = [
        (f: Record<string, ort.Tensor>) => {
          f.use_cache_branch = new ort.Tensor('bool', new Uint8Array([1]), [1]);
        },
        (f: Record<string, ort.Tensor>) => {
          f.position_ids = new ort.Tensor(
            'int64',
            bigints(B * len, () => 0),
            [B, len],
          );
        },
        (f: Record<string, ort.Tensor>) => {
          f.attention_mask = new ort.Tensor(
            'int64',
            bigints(B * len, () => 0),
            [B, len],
          );
        },
        (f: Record<string, ort.Tensor>) => {
          for (const k of ['key', 'value'])
            f[`past_key_values.0.${k}`] = new ort.Tensor('float32', new Float32Array(B * HEADS * HEAD_DIM), [B, HEADS, 1, HEAD_DIM]);
        },
      ];
      for (const edit of changed) expect(diff(ok, await logits(edit))).toBeGreaterThan(0.01);
      // a past of the wrong head count, ids of the wrong type or a missing mask: ONNX Runtime fails
      await expect(nll({ ...io, past: io.past!.map((p) => ({ ...p, heads: 1, headDim: 16 })) })).rejects.toThrow(/ONNX Runtime failed/);
      await expect(nll({ ...io, inputType: 'int32' })).rejects.toThrow(/ONNX Runtime failed/);
      await expect(nll({ ...io, attentionMask: null })).rejects.toThrow(/ONNX Runtime failed/);
      await expect(nll({ ...io, past: io.past!.map((p) => ({ ...p, type: 'float16' as const })) })).rejects.toThrow(/ONNX Runtime failed/);
    } finally {
      await session.release();
      await raw.release();
    }
  });

  it('layouts - old manifests without the new fields still parse (the plain layout); bad ones are refused', async () => {
    const built = await buildPool({
      base: family.base,
      vectors: [{ name: 'ja', path: family.checkpoints.ja! }],
      out: join(tmp, 'plain-pool'),
    });
    expect(built.model).toEqual({ input: 'input_ids', output: 'logits', attentionMask: null, vocab: 64, contextLength: 64 });
    const json = JSON.parse(await readFile(join(tmp, 'plain-pool', 'manifest.json'), 'utf8'));
    expect(Object.keys(json.model).sort()).toEqual(['attentionMask', 'contextLength', 'input', 'output', 'vocab']);
    expect(parseManifest(json, 'm').model.past).toBeUndefined();
    const withPast = { ...json, model: { ...json.model, past: [{ name: 'p', type: 'int8', heads: 2, headDim: 8 }] } };
    expect(() => parseManifest(withPast, 'm')).toThrow(/model\.past\[0\]\.type/);
    const zeroHeads = { ...json, model: { ...json.model, past: [{ name: 'p', type: 'float16', heads: 0, headDim: 8 }] } };
    expect(() => parseManifest(zeroHeads, 'm')).toThrow(/model\.past\[0\]\.heads/);
  });
});

/**
 * The model as a 16-bit export computes it (Optimum --dtype fp16, genai -p fp16/bf16): weights,
 * constants, casts, float inputs and outputs all in `dtype`, so every node runs in 16 bits.
 */
function narrowTo16(model: ModelProto, dtype: 'float16' | 'bfloat16'): ModelProto {
  const code = CODE[dtype];
  const narrow = (t: TensorProto): TensorProto => {
    if (t.dataType !== 1) return t;
    const n = (t.dims ?? []).reduce<number>((a, d) => a * Number(d), 1);
    const values = new Float32Array(n);
    decodeFloats('float32', t.rawData!, values, n);
    const raw = new Uint8Array(n * 2);
    encodeFloats(dtype, values, raw, n);
    return { ...t, dataType: code, rawData: raw };
  };
  const graph = (g: GraphProto): void => {
    g.initializer = (g.initializer ?? []).map(narrow);
    for (const v of [...(g.input ?? []), ...(g.output ?? []), ...(g.valueInfo ?? [])]) {
      const tt = v.type?.tensorType;
      if (tt?.elemType === 1) tt.elemType = code;
    }
    for (const n of g.node ?? [])
      for (const a of n.attribute ?? []) {
        if (a.name === 'to' && a.i === 1) a.i = code;
        if (a.t) a.t = narrow(a.t as TensorProto);
        if (a.g) graph(a.g as GraphProto);
      }
  };
  graph(model.graph!);
  return model;
}

/** Family parameters as a 16-bit export stores them (rounded to nearest even). */
function rounded(p: FamilyParams, dtype: 'float16' | 'bfloat16'): FamilyParams {
  const out = { ...p };
  for (const k of Object.keys(p) as (keyof FamilyParams)[]) {
    const v = Float32Array.from(p[k]);
    const raw = new Uint8Array(v.length * 2);
    encodeFloats(dtype, v, raw, v.length);
    decodeFloats(dtype, raw, v, v.length);
    out[k] = Float64Array.from(v);
  }
  return out;
}

describe('layouts - 16-bit exports on the CPU provider', () => {
  const cases: { name: string; dtype: 'float16' | 'bfloat16'; layout: Layout }[] = [
    { name: 'float16 plain', dtype: 'float16', layout: { mask: 'int64' } },
    {
      name: 'float16 Optimum decoder with a float16 KV cache',
      dtype: 'float16',
      layout: { batch: 'batch_size', seq: 'sequence_length', mask: 'int64', positionIds: 'int64', past: { layers: 2, type: 'float16' } },
    },
    { name: 'bfloat16 plain, bfloat16 logits', dtype: 'bfloat16', layout: { mask: 'int64' } },
    {
      name: 'bfloat16 with a bfloat16 KV cache (genai -p bf16)',
      dtype: 'bfloat16',
      layout: { batch: 'batch_size', seq: 'sequence_length', mask: 'int32', positionIds: 'int64', past: { layers: 1, type: 'bfloat16' } },
    },
  ];
  for (const { name, dtype, layout } of cases) {
    it(`layouts - ${name}: computed in float32 on the CPU (weights as stored), NLL of the ${dtype} weights`, async () => {
      const dir = `half-${name.replace(/[^a-z0-9]+/gi, '-').toLowerCase()}`;
      const w = await writeLayout(dir, layout, (m) => narrowTo16(m, dtype));
      const { pool, built } = await poolOf(dir, w);
      expect(built.stderr).toBe('');
      const sets = Object.keys(seqs).flatMap((s) => ['--set', `${s}=${family.dev[s]}`]);
      // the base exactly: only float32 against the reference's float64 arithmetic differs
      const base = await optimer('eval', '--pool', pool, ...sets, '--batch-tokens', '300', '--json');
      expect(base.stderr).toBe('');
      expect(JSON.parse(base.stdout).weightFeed).toBe('inputs');
      for (const s of JSON.parse(base.stdout).scores as { name: string; score: number }[])
        expect(Math.abs(s.score - referenceNll(S, rounded(w.params.base!, dtype), seqs[s.name]!))).toBeLessThan(1e-4);
      // ja=1 is base + the 16-bit delta, rounded again: each weight within an ulp or so of ja's own
      // 16-bit value, which moves the NLL by far less than the gap between ja and the base
      const ja = await optimer('eval', '--pool', pool, '--weights', 'ja=1', ...sets, '--batch-tokens', '300', '--json');
      expect(ja.stderr).toBe('');
      for (const s of JSON.parse(ja.stdout).scores as { name: string; score: number }[]) {
        const want = referenceNll(S, rounded(w.params.ja!, dtype), seqs[s.name]!);
        const gap = Math.abs(want - referenceNll(S, rounded(w.params.base!, dtype), seqs[s.name]!));
        expect(Math.abs(s.score - want)).toBeLessThan(Math.min(dtype === 'float16' ? 2e-3 : 1e-2, gap / 10));
      }
    });
  }
});

describe('layouts - refusals at pool build', () => {
  const attempt = async (name: string, l: Layout) => {
    const w = await writeLayout(name, l);
    return buildPool({ base: w.base, vectors: [{ name: 'ja', path: w.checkpoints.ja! }], out: join(tmp, `${name}-pool`) });
  };

  it('layouts - an unknown input is refused, named with its type and what optimer feeds (also through the CLI)', async () => {
    const extra = valueInfo('token_type_ids', 'int64', ['batch_size', 'sequence_length']);
    await expect(attempt('unknown', { mask: 'int64', extra })).rejects.toThrow(
      /graph input 'token_type_ids' \(int64 \[batch_size, sequence_length\]\) is not one optimer can feed; optimer feeds 'input_ids' \(int64 or int32 \[batch, seq\]: the token ids\), 'attention_mask' .*'position_ids' .*'past_key_values\.\{i\}\.key\|value' .*'use_cache_branch' \(bool \[1\]: false\)/,
    );
    const r = await optimer(
      'pool',
      'build',
      '--base',
      join(tmp, 'unknown-base.onnx'),
      '--vector',
      `ja=${join(tmp, 'unknown-ja.onnx')}`,
      '--out',
      join(tmp, 'unknown-cli'),
    );
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /unknown-base\.onnx: graph input 'token_type_ids' \(int64 \[batch_size, sequence_length\]\) is not one optimer can feed/,
    );
  });

  it('layouts - a past_key_values input with a symbolic head dim is refused naming the input and the dim', async () => {
    await expect(attempt('symbolic', { mask: 'int64', past: { layers: 1, type: 'float32', headDim: 'head_dim' } })).rejects.toThrow(
      /graph input 'past_key_values\.0\.key' \(float32 \[batch, 2, past_sequence_length, head_dim\]\): dim 3 \(head_dim\) is symbolic 'head_dim', not a fixed number; optimer feeds it an empty past \[batch, heads, 0, head_dim\]/,
    );
    await expect(attempt('symbolic-heads', { past: { layers: 1, type: 'float32', heads: 'num_kv_heads' } })).rejects.toThrow(
      /'past_key_values\.0\.key' .*dim 1 \(heads\) is symbolic 'num_kv_heads'/,
    );
    await expect(attempt('fixed-past', { past: { layers: 1, type: 'float32', pastLen: 128 } })).rejects.toThrow(
      /'past_key_values\.0\.key' .* has a fixed past length 128/,
    );
  });

  it('layouts - ids and masks of a type optimer cannot feed are refused', async () => {
    const model = withLayout(await loadFamilyParams(family.base), { mask: 'int64' });
    model.graph!.input!.find((i) => i.name === 'attention_mask')!.type!.tensorType!.elemType = 1;
    const path = join(tmp, 'float-mask.onnx');
    await writeModel(path, model);
    await expect(buildPool({ base: path, vectors: [{ name: 'ja', path }], out: join(tmp, 'float-mask-pool') })).rejects.toThrow(
      /graph input 'attention_mask' is float32 \[batch, seq\]; optimer feeds it 1 on tokens and 0 on padding \[batch, seq\] as int64 or int32/,
    );
  });
});
