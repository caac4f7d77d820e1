import { OptimerError } from '../errors.js';
import { DataType, dtypeOf } from '../onnx/dtype.js';
import type { OnnxModelFile } from '../onnx/model-file.js';
import { toNumber, type GraphProto, type TensorShapeDim, type ValueInfoProto } from '../onnx/proto.js';
import type { IdType, ModelDescription, PastInput } from './manifest.js';

/**
 * The usual ONNX layouts of a causal LM, found from the graph's inputs:
 *  - plain: `input_ids` (+ optional `attention_mask`) → `logits`;
 *  - Optimum's `text-generation-with-past` decoder and onnxruntime-genai's model builder: also
 *    `position_ids` and `past_key_values.{i}.key|value` [batch, kv_heads, past_len, head_dim]
 *    (fed empty: a full sequence is scored with past length 0); the `present.*` outputs are not
 *    fetched;
 *  - Optimum's merged decoder: also the bool `use_cache_branch` (fed false).
 * Anything else is refused here, at pool build, naming the input and what optimer would feed.
 */
export interface DescribeOptions {
  inputName?: string;
  outputName?: string;
  contextLength?: number;
}

const PAST = /^past_key_values\.(\d+)\.(key|value)$/;
const ID_TYPES: readonly string[] = ['int64', 'int32'] satisfies IdType[];

/** What optimer can feed, for messages (the ids input under its own name). */
export function feedableInputs(input = 'input_ids'): string {
  return [
    `'${input}' (int64 or int32 [batch, seq]: the token ids)`,
    `'attention_mask' (int64 or int32 [batch, seq]: 1 on tokens, 0 on padding)`,
    `'position_ids' (int64 or int32 [batch, seq]: 0..len−1, 0 on padding)`,
    `'past_key_values.{i}.key|value' (float32 or float16 [batch, heads, past_len, head_dim] with fixed heads and head_dim: empty, past length 0)`,
    `'use_cache_branch' (bool [1]: false)`,
  ].join(', ');
}

function dimText(d: TensorShapeDim): string {
  if (d.dimParam) return d.dimParam;
  if (d.dimValue !== undefined && d.dimValue !== null) return String(toNumber(d.dimValue));
  return '?';
}

/** A graph value's type and shape as messages show it: `int64 [batch, seq]`. */
export function describeValueType(v: ValueInfoProto): string {
  const tt = v.type?.tensorType;
  if (!tt) return 'not a tensor';
  let type: string;
  try {
    type = dtypeOf(tt.elemType ?? 0, '');
  } catch {
    type = `ONNX type ${tt.elemType ?? '?'}`;
  }
  const dims = tt.shape?.dim;
  return dims ? `${type} [${dims.map(dimText).join(', ')}]` : `${type} (no shape)`;
}

function elemName(v: ValueInfoProto): string | undefined {
  try {
    return dtypeOf(v.type?.tensorType?.elemType ?? 0, '');
  } catch {
    return undefined;
  }
}

function fixedDim(d: TensorShapeDim | undefined): number | undefined {
  if (!d || d.dimParam || d.dimValue === undefined || d.dimValue === null) return undefined;
  return toNumber(d.dimValue);
}

/**
 * Reads from the base's graph what a worker must feed it (see the layouts above) and the limits
 * of its sequences. Throws BAD_ONNX naming the input it cannot feed, and why.
 */
export function describeModel(base: OnnxModelFile, opts: DescribeOptions = {}): ModelDescription {
  const g = base.model.graph!;
  const where = base.path;
  const fail = (msg: string): never => {
    throw new OptimerError('BAD_ONNX', `${where}: ${msg}`);
  };
  const initNames = new Set(base.initializers.map((t) => t.name));
  const inputs = (g.input ?? []).filter((i) => !initNames.has(i.name ?? ''));
  const input = opts.inputName ?? 'input_ids';
  const output = opts.outputName ?? 'logits';
  const inp = inputs.find((i) => i.name === input);
  if (!inp) fail(`no graph input '${input}' (inputs: ${inputs.map((i) => i.name).join(', ')}); name it with --input-name`);
  const out = (g.output ?? []).find((o) => o.name === output);
  if (!out) fail(`no graph output '${output}' (outputs: ${(g.output ?? []).map((o) => o.name).join(', ')}); name it with --output-name`);

  /** Refuses a value whose element type is not one of `types` or whose rank is not `rank`. */
  const checkInput = (v: ValueInfoProto, types: readonly string[], rank: number, role: string): string => {
    const name = v.name ?? '';
    const type = elemName(v);
    if (type === undefined || !types.includes(type)) {
      fail(`graph input '${name}' is ${describeValueType(v)}; optimer feeds it ${role} as ${types.join(' or ')}`);
    }
    const dims = v.type?.tensorType?.shape?.dim;
    if (dims && dims.length !== rank) {
      fail(`graph input '${name}' is ${describeValueType(v)}; optimer feeds it ${role} of rank ${rank}`);
    }
    return type!;
  };

  const model: ModelDescription = { input, output, attentionMask: null, vocab: null, contextLength: null };
  const inputType = checkInput(inp!, ID_TYPES, 2, 'the token ids [batch, seq]') as IdType;
  if (inputType !== 'int64') model.inputType = inputType;
  const past: PastInput[] = [];
  for (const v of inputs) {
    const name = v.name ?? '';
    if (v === inp) continue;
    if (name === 'attention_mask') {
      const t = checkInput(v, ID_TYPES, 2, '1 on tokens and 0 on padding [batch, seq]') as IdType;
      model.attentionMask = name;
      if (t !== 'int64') model.attentionMaskType = t;
    } else if (name === 'position_ids') {
      model.positionIds = { name, type: checkInput(v, ID_TYPES, 2, 'positions 0..len−1 [batch, seq]') as IdType };
    } else if (name === 'use_cache_branch') {
      checkInput(v, ['bool'], 1, 'false, shape [1]');
      const n = fixedDim(v.type?.tensorType?.shape?.dim?.[0]);
      if (n !== undefined && n !== 1) fail(`graph input '${name}' is ${describeValueType(v)}; optimer feeds it false, shape [1]`);
      model.useCacheBranch = name;
    } else if (PAST.test(name)) {
      past.push(describePast(v, fail));
    } else {
      fail(`graph input '${name}' (${describeValueType(v)}) is not one optimer can feed; optimer feeds ${feedableInputs(input)}`);
    }
  }
  if (past.length > 0) model.past = past;
  // bfloat16 outputs need nothing: the loss graph casts the logits and drops every other output
  checkSubgraphWeights(g, fail);

  const outDims = out!.type?.tensorType?.shape?.dim ?? [];
  const vocab = fixedDim(outDims[outDims.length - 1]);
  model.vocab = vocab !== undefined && vocab > 0 ? vocab : null;
  const seqDim = fixedDim(inp!.type?.tensorType?.shape?.dim?.[1]) ?? 0;
  const meta = (base.model.metadataProps ?? []).find((p) => p.key === 'optimer.context_length');
  const contextLength = opts.contextLength ?? (seqDim > 0 ? seqDim : meta ? Number(meta.value) : null);
  if (contextLength !== null && (!Number.isSafeInteger(contextLength) || contextLength < 2)) {
    throw new OptimerError('BAD_ARGUMENT', `${where}: context length ${contextLength} must be an integer ≥ 2`);
  }
  model.contextLength = contextLength;
  return model;
}

/** A `past_key_values.{i}.key|value` input: [batch, heads, past_len, head_dim], heads and head_dim fixed. */
function describePast(v: ValueInfoProto, fail: (msg: string) => never): PastInput {
  const name = v.name ?? '';
  const type = elemName(v);
  // bfloat16: onnxruntime-node cannot feed it, so workers make it a float32 input cast inside
  if (type !== 'float32' && type !== 'float16' && type !== 'bfloat16') {
    fail(`graph input '${name}' is ${describeValueType(v)}; optimer feeds it an empty past as float32, float16 or bfloat16`);
  }
  const dims = v.type?.tensorType?.shape?.dim;
  const want = 'optimer feeds it an empty past [batch, heads, 0, head_dim] and reads heads and head_dim from the graph';
  if (!dims) fail(`graph input '${name}' has no shape in the graph; ${want}`);
  if (dims!.length !== 4) fail(`graph input '${name}' is ${describeValueType(v)}, not [batch, heads, past_len, head_dim]; ${want}`);
  const fixed = (i: number, label: string): number => {
    const n = fixedDim(dims![i]);
    if (n === undefined || n <= 0) {
      fail(
        `graph input '${name}' (${describeValueType(v)}): dim ${i} (${label}) is ${n === undefined ? `symbolic '${dimText(dims![i]!)}'` : n}, not a fixed number; ${want}`,
      );
    }
    return n!;
  };
  const heads = fixed(1, 'heads');
  const headDim = fixed(3, 'head_dim');
  const pastLen = fixedDim(dims![2]);
  if (pastLen !== undefined && pastLen !== 0) {
    fail(
      `graph input '${name}' (${describeValueType(v)}) has a fixed past length ${pastLen} (a shared KV buffer, as onnxruntime-genai's past_present_share_buffer makes); ${want}: export it with a dynamic past length`,
    );
  }
  return { name, type: type as PastInput['type'], heads, headDim };
}

/**
 * Pools merge the main graph's initializers only: a float initializer inside an If/Loop branch
 * would silently keep the base's values. Optimum's merged decoder keeps its weights in the main
 * graph, so this refuses only unusual exports.
 */
function checkSubgraphWeights(g: GraphProto, fail: (msg: string) => never): void {
  for (const n of g.node ?? []) {
    for (const a of n.attribute ?? []) {
      const subs = [a.g, ...((a.graphs as unknown[] | undefined) ?? [])].filter(Boolean) as GraphProto[];
      for (const sg of subs) {
        for (const t of sg.initializer ?? []) {
          const code = t.dataType ?? 0;
          const float = code === DataType.FLOAT || code === DataType.FLOAT16 || code === DataType.BFLOAT16 || code === DataType.DOUBLE;
          if (float) {
            fail(
              `node ${n.opType} '${n.name ?? ''}' holds the float initializer '${t.name}' in its subgraph '${a.name}'; optimer merges only the main graph's initializers (move them to the main graph)`,
            );
          }
        }
        checkSubgraphWeights(sg, fail);
      }
    }
  }
}
