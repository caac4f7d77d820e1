import {
  type AttributeProto,
  DataType,
  decodeFloats,
  decodeModel,
  encodeModel,
  type ExecutionProvider,
  type GraphProto,
  intAttr,
  type ModelIo,
  type NodeProto,
  type TensorEntry,
  type TensorProto,
  toNumber,
  type ValueInfoProto,
} from '../../shared/index.js';
import { type LossGraph, toLossGraph } from './loss-graph.js';
import type { LmIo } from './session-model.js';
import { weightsAsInputs } from './weights-as-inputs.js';

const HALF = new Set<number>([DataType.FLOAT16, DataType.BFLOAT16]);
/** Suffix of a 16-bit weight's own name once a Cast to float32 takes its old name. */
const RAW_SUFFIX = '__optimer_w16';
/** Suffix of a bfloat16 input's value inside the graph once the input itself is float32. */
const BF16_SUFFIX = '__optimer_bf16';

/**
 * A 16-bit model (float16 or bfloat16 weights, as Optimum and onnxruntime-genai export them) made
 * to run on a provider without 16-bit kernels, ONNX Runtime's CPU one: every weight stays as it is
 * stored (the merged 16-bit buffers are still its external data, no bytes change) and is cast to
 * float32 by a Cast node that takes its name; everything else that is float16 or bfloat16 (Cast
 * targets, constants, graph inputs and outputs, value types, in subgraphs too) becomes float32.
 * The graph then computes in float32: scores are those of the 16-bit weights evaluated exactly,
 * not of 16-bit arithmetic. ONNX Runtime folds the casts into float32 copies at session creation
 * (time and memory: see the README, one trial). With `halfInputs` (a graph whose weights are
 * inputs, weightsAsInputs) a 16-bit input also calls for widening, and becomes a float32 input, no
 * cast. Null for a graph with no 16-bit weight (or such input) and no bfloat16 input or output.
 */
export function widenTo32(bytes: Uint8Array, where: string, options: { halfInputs?: boolean } = {}): Uint8Array | null {
  const model = decodeModel(bytes, where);
  const g = model.graph;
  const half = (g?.initializer ?? []).some((t) => HALF.has(t.dataType ?? 0)) || (!!options.halfInputs && (g?.input ?? []).some(isHalf));
  if (!g || !(half || hasBf16Io(g))) return null;
  widenGraph(g);
  return encodeModel(model);
}

/**
 * For providers with 16-bit kernels (CUDA): bfloat16 graph inputs (a genai bf16 export's KV
 * cache), which onnxruntime-node cannot feed, become float32 inputs cast to bfloat16 inside. The
 * logits need nothing: the loss graph casts them and they stop being an output. Null: none.
 */
export function castBf16Inputs(bytes: Uint8Array, where: string): Uint8Array | null {
  const model = decodeModel(bytes, where);
  const g = model.graph;
  const bf16 = (g?.input ?? []).filter((v) => v.type?.tensorType?.elemType === DataType.BFLOAT16);
  if (!g || bf16.length === 0) return null;
  const renamed = new Map<string, string>();
  const casts: NodeProto[] = [];
  for (const v of bf16) {
    const name = v.name ?? '';
    renamed.set(name, `${name}${BF16_SUFFIX}`);
    casts.push({
      opType: 'Cast',
      input: [name],
      output: [`${name}${BF16_SUFFIX}`],
      name: `${name}${BF16_SUFFIX}_cast`,
      attribute: [intAttr('to', DataType.BFLOAT16)],
    });
    v.type!.tensorType!.elemType = DataType.FLOAT;
  }
  renameUses(g, renamed);
  g.node = [...casts, ...(g.node ?? [])];
  return encodeModel(model);
}

/** A 16-bit graph input: a KV cache, or a weight once weightsAsInputs made it one. */
function isHalf(v: ValueInfoProto): boolean {
  return HALF.has(v.type?.tensorType?.elemType ?? 0);
}

function hasBf16Io(g: GraphProto): boolean {
  return [...(g.input ?? []), ...(g.output ?? [])].some((v) => v.type?.tensorType?.elemType === DataType.BFLOAT16);
}

/** Every use of a renamed value, in subgraphs too (outer-scope names reach into them). */
function renameUses(g: GraphProto, renamed: ReadonlyMap<string, string>): void {
  for (const n of g.node ?? []) {
    n.input = (n.input ?? []).map((x) => renamed.get(x) ?? x);
    for (const a of n.attribute ?? []) {
      if (a.g) renameUses(a.g as GraphProto, renamed);
      if (Array.isArray(a.graphs)) for (const sub of a.graphs as GraphProto[]) renameUses(sub, renamed);
    }
  }
}

/** The model's inputs as a widened graph takes them (16-bit past fed as float32), or with `only` those of that type. */
export function widenedIo<T extends ModelIo>(io: T, only?: 'bfloat16'): T {
  const wide = (t: string) => t !== 'float32' && (only === undefined || t === only);
  if (!io.past?.some((p) => wide(p.type))) return io;
  return { ...io, past: io.past.map((p) => (wide(p.type) ? { ...p, type: 'float32' as const } : p)) };
}

function widenGraph(g: GraphProto): void {
  const casts: NodeProto[] = [];
  const renamed = new Set<string>();
  for (const t of g.initializer ?? []) {
    if (!HALF.has(t.dataType ?? 0)) continue;
    const name = t.name ?? '';
    t.name = `${name}${RAW_SUFFIX}`;
    renamed.add(name);
    casts.push({
      opType: 'Cast',
      input: [t.name],
      output: [name],
      name: `${name}${RAW_SUFFIX}_cast`,
      attribute: [intAttr('to', DataType.FLOAT)],
    });
  }
  // an initializer also listed as a graph input (IR < 4) keeps its 16-bit type under its new name
  const inputs = (g.input ?? []).map((v) => (renamed.has(v.name ?? '') ? { ...v, name: `${v.name}${RAW_SUFFIX}` } : v));
  for (const v of [...inputs.filter((v) => !(v.name ?? '').endsWith(RAW_SUFFIX)), ...(g.output ?? []), ...(g.valueInfo ?? [])])
    widenValue(v);
  g.input = inputs;
  for (const n of g.node ?? []) widenNode(n);
  g.node = [...casts, ...(g.node ?? [])];
}

function widenValue(v: ValueInfoProto): void {
  const tt = v.type?.tensorType;
  if (tt && HALF.has(tt.elemType ?? 0)) tt.elemType = DataType.FLOAT;
}

/** Cast/EyeLike/RandomNormal… targets, tensor-valued attributes (Constant, ConstantOfShape) and subgraphs. */
function widenNode(n: NodeProto): void {
  for (const a of n.attribute ?? []) widenAttribute(a);
}

function widenAttribute(a: AttributeProto): void {
  if ((a.name === 'to' || a.name === 'dtype') && HALF.has(toNumber(a.i as number | undefined))) a.i = DataType.FLOAT;
  if (a.t) a.t = widenTensor(a.t as TensorProto);
  if (Array.isArray(a.tensors)) a.tensors = (a.tensors as TensorProto[]).map(widenTensor);
  if (a.g) widenGraph(a.g as GraphProto);
  if (Array.isArray(a.graphs)) for (const sub of a.graphs as GraphProto[]) widenGraph(sub);
}

/** A small inline 16-bit tensor (a constant) as float32. */
function widenTensor(t: TensorProto): TensorProto {
  const type = t.dataType ?? 0;
  if (!HALF.has(type)) return t;
  const n = (t.dims ?? []).reduce<number>((a, d) => a * toNumber(d), 1);
  let raw = t.rawData;
  if (!raw || raw.length === 0) {
    // 16-bit values may also sit in int32_data, one per entry (the ONNX spec's layout)
    raw = new Uint8Array(new Uint16Array((t.int32Data ?? []).map((x) => x & 0xffff)).buffer);
  }
  const out = new Float32Array(n);
  decodeFloats(type === DataType.FLOAT16 ? 'float16' : 'bfloat16', raw, out, n);
  const { int32Data: _drop, ...rest } = t;
  return { ...rest, dataType: DataType.FLOAT, rawData: new Uint8Array(out.buffer) };
}

/** A loss graph and the inputs it takes. */
export interface RunnableGraph {
  graph: LossGraph;
  io: LmIo;
}

/**
 * The loss graph each provider runs, built once per pool and on first use: the graph as stored,
 * and for the CPU provider (no float16/bfloat16 kernels) a 16-bit model widened to float32.
 */
export class ProviderGraphs {
  private stored?: RunnableGraph;
  private widened?: RunnableGraph | null;
  private inputs?: RunnableGraph;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly model: LmIo,
    private readonly where: string,
  ) {}

  for(provider: ExecutionProvider): RunnableGraph {
    if (provider === 'cpu') {
      if (this.widened === undefined) {
        const wide = widenTo32(this.bytes, this.where);
        this.widened = wide && { graph: toLossGraph(wide, this.options()), io: widenedIo(this.model) };
      }
      if (this.widened) return this.widened;
    }
    if (!this.stored) {
      const cast = castBf16Inputs(this.bytes, this.where);
      this.stored = cast
        ? { graph: toLossGraph(cast, this.options()), io: widenedIo(this.model, 'bfloat16') }
        : { graph: toLossGraph(this.bytes, this.options()), io: this.model };
    }
    return this.stored;
  }

  /**
   * For the CPU provider, the graph with the merged weights (the layout's `tensors`) as inputs,
   * float32 whatever their stored dtype (weightsAsInputs).
   */
  withWeightInputs(tensors: readonly TensorEntry[]): RunnableGraph {
    if (!this.inputs) {
      const bytes = weightsAsInputs(this.bytes, tensors, this.where);
      const wide = widenTo32(bytes, this.where, { halfInputs: true }) ?? bytes;
      this.inputs = { graph: toLossGraph(wide, this.options()), io: widenedIo(this.model) };
    }
    return this.inputs;
  }

  private options() {
    return { logits: this.model.output, where: this.where };
  }
}
