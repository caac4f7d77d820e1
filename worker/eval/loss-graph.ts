import {
  type AttributeProto,
  DataType,
  decodeModel,
  dtypeOf,
  encodeModel,
  type GraphProto,
  intAttr,
  type NodeProto,
  OptimerError,
  type TensorShapeDim,
  tensor,
  toNumber,
  type ValueInfoProto,
} from '../../shared/index.js';

/** The graph input the worker fills with the next token at each position, int64 [batch, seq]. */
export const TARGETS_INPUT = 'optimer_targets';
/** The one output of a loss graph: ln p(targets[b, t] | ids[b, ≤t]), float32 [batch, seq]. */
export const LOGPROBS_OUTPUT = 'optimer_token_logprobs';
/** GatherElements, the gather of the next token, is in the default domain from opset 11 on. */
export const MIN_LOSS_OPSET = 11;

/**
 * A causal LM's graph with its per-token loss appended (see toLossGraph): what sessions are
 * created from. Built once per study context, not per trial.
 */
export class LossGraph {
  constructor(
    readonly bytes: Uint8Array,
    /** the logits' element type in the original graph (cast to float32 inside) */
    readonly logitsDtype: string,
    /** the default-domain opset the graph declares (and the loss ops respect) */
    readonly opset: number,
  ) {}
}

export interface LossGraphOptions {
  /** the logits output; default 'logits', or the graph's only output */
  logits?: string;
  /** names the graph in error messages */
  where?: string;
}

/**
 * Appends the per-token loss to a causal LM graph, so that ONNX Runtime returns one float32
 * per position instead of the [batch, seq, vocab] logits:
 *
 *   lp     = LogSoftmax(Cast<float32>(logits), axis = -1)                   [B, T, V]
 *   output = Squeeze(GatherElements(lp, Unsqueeze(targets, 2), axis = 2), 2)  [B, T]
 *
 * (the Cast only for 16-bit or float64 logits). Targets must be below the vocabulary size, as
 * GatherElements fails on others: the worker checks them first. The logits stop being an output, as do
 * all the other outputs (KV caches of real exports), and nodes that only they needed are
 * dropped: ONNX Runtime runs every node of a graph, not only those the fetched outputs need.
 * Only default-domain ops of the opset the graph declares are added (≥ 11; Unsqueeze and
 * Squeeze take their axes as an attribute below 13 and as an input from 13 on): the opset is
 * never raised, since that would change what the graph's own nodes mean.
 * A graph that is already a loss graph comes back as it is.
 */
export function toLossGraph(bytes: Uint8Array, options: LossGraphOptions = {}): LossGraph {
  const where = options.where ?? 'graph';
  const model = decodeModel(bytes, where);
  const g = model.graph;
  if (!g) throw new OptimerError('BAD_ONNX', `${where}: the model has no graph`);
  const bad = (msg: string): never => {
    throw new OptimerError('BAD_ONNX', `${where}: ${msg}`);
  };
  const opsetEntry = (model.opsetImport ?? []).find((o) => !o.domain || o.domain === 'ai.onnx');
  const opset = toNumber(opsetEntry?.version);
  const outputs = g.output ?? [];
  if (outputs.length === 1 && outputs[0]!.name === LOGPROBS_OUTPUT && (g.input ?? []).some((i) => i.name === TARGETS_INPUT)) {
    return new LossGraph(bytes, 'unknown', opset);
  }
  if (!opsetEntry) bad('no default-domain opset_import');
  if (opset < MIN_LOSS_OPSET) {
    bad(
      `default-domain opset ${opset} is below ${MIN_LOSS_OPSET}, which the per-token loss needs (GatherElements); ` +
        're-export the model with opset ≥ 13',
    );
  }

  const logitsName = options.logits ?? (outputs.some((o) => o.name === 'logits') || outputs.length !== 1 ? 'logits' : outputs[0]!.name!);
  const logits = outputs.find((o) => o.name === logitsName);
  if (!logits) bad(`no graph output '${logitsName}' (outputs: ${outputs.map((o) => o.name).join(', ')})`);
  const tt = logits!.type?.tensorType;
  const elemType = tt?.elemType ?? 0;
  const floats: number[] = [DataType.FLOAT, DataType.FLOAT16, DataType.BFLOAT16, DataType.DOUBLE];
  if (elemType !== 0 && !floats.includes(elemType)) {
    bad(`logits output '${logitsName}' is ${dtypeName(elemType)}; expected float32, float16, bfloat16 or float64`);
  }
  const dims = tt?.shape?.dim;
  if (dims && dims.length !== 3) bad(`logits output '${logitsName}' has rank ${dims.length}; expected [batch, seq, vocab]`);

  const taken = new Set<string>();
  collectNames(g, taken);
  for (const fixed of [TARGETS_INPUT, LOGPROBS_OUTPUT]) {
    if (taken.has(fixed)) bad(`the graph already uses the name '${fixed}', which optimer's loss needs`);
  }
  const fresh = (base: string): string => {
    let name = `optimer_${base}`;
    for (let i = 1; taken.has(name); i++) name = `optimer_${base}_${i}`;
    taken.add(name);
    return name;
  };
  const added: NodeProto[] = [];
  const add = (opType: string, inputs: string[], base: string, attribute: AttributeProto[] = []): string => {
    const out = base === LOGPROBS_OUTPUT ? base : fresh(base);
    added.push({ opType, input: inputs, output: [out], name: fresh(`${base.replace(/^optimer_/, '')}_node`), attribute });
    return out;
  };
  const constant = (base: string, t: ReturnType<typeof tensor>): string => add('Constant', [], base, [{ name: 'value', type: 4, t }]);
  const axes2 = (opType: 'Unsqueeze' | 'Squeeze', input: string, base: string): string =>
    opset >= 13
      ? add(opType, [input, constant(`${base}_axes`, tensor('axes', 'int64', [1], new Uint8Array(BigInt64Array.of(2n).buffer)))], base)
      : add(opType, [input], base, [{ name: 'axes', type: 7, ints: [2] }]);

  const f32 = elemType === DataType.FLOAT ? logitsName : add('Cast', [logitsName], 'logits_f32', [intAttr('to', DataType.FLOAT)]);
  const logProbs = add('LogSoftmax', [f32], 'log_softmax', [intAttr('axis', -1)]);
  const index = axes2('Unsqueeze', TARGETS_INPUT, 'target_index');
  const picked = add('GatherElements', [logProbs, index], 'picked', [intAttr('axis', 2)]);
  axes2('Squeeze', picked, LOGPROBS_OUTPUT);

  const bt = (i: number, fallback: string): TensorShapeDim => dims?.[i] ?? { dimParam: fallback };
  const tensorInfo = (name: string, elem: number): ValueInfoProto => ({
    name,
    type: { tensorType: { elemType: elem, shape: { dim: [bt(0, 'optimer_batch'), bt(1, 'optimer_seq')] } } },
  });
  const nodes = prune([...(g.node ?? []), ...added], LOGPROBS_OUTPUT);
  const used = new Set(nodes.flatMap((n) => n.input ?? []));
  for (const n of nodes) collectSubgraphInputs(n, used);
  const inputNames = new Set((g.input ?? []).map((i) => i.name));
  g.node = nodes;
  // initializers nothing reads any more (and that are not graph inputs) would only be warned about
  g.initializer = (g.initializer ?? []).filter((t) => used.has(t.name ?? '') || inputNames.has(t.name));
  g.input = [...(g.input ?? []), tensorInfo(TARGETS_INPUT, DataType.INT64)];
  g.output = [tensorInfo(LOGPROBS_OUTPUT, DataType.FLOAT)];
  // the logits keep their declared type and shape, now as an intermediate value
  g.valueInfo = [...(g.valueInfo ?? []), logits!];
  return new LossGraph(encodeModel(model), elemType === 0 ? 'unknown' : dtypeName(elemType), opset);
}

function dtypeName(code: number): string {
  try {
    return dtypeOf(code, '');
  } catch {
    return `ONNX data type ${code}`;
  }
}

function subgraphs(n: NodeProto): GraphProto[] {
  const out: GraphProto[] = [];
  for (const a of n.attribute ?? []) {
    if (a.g) out.push(a.g as GraphProto);
    for (const sg of (a.graphs as GraphProto[] | undefined) ?? []) out.push(sg);
  }
  return out;
}

/** Every value and node name in a graph and its subgraphs. */
function collectNames(g: GraphProto, into: Set<string>): void {
  for (const v of [...(g.input ?? []), ...(g.output ?? []), ...(g.valueInfo ?? []), ...(g.initializer ?? [])]) if (v.name) into.add(v.name);
  for (const n of g.node ?? []) {
    if (n.name) into.add(n.name);
    for (const v of [...(n.input ?? []), ...(n.output ?? [])]) if (v) into.add(v);
    for (const sg of subgraphs(n)) collectNames(sg, into);
  }
}

/** Names a node's subgraphs read (possibly from the outer scope): an over-approximation. */
function collectSubgraphInputs(n: NodeProto, into: Set<string>): void {
  for (const sg of subgraphs(n)) {
    for (const m of sg.node ?? []) {
      for (const v of m.input ?? []) if (v) into.add(v);
      collectSubgraphInputs(m, into);
    }
  }
}

/** The nodes `output` depends on, in their (topological) order. */
function prune(nodes: NodeProto[], output: string): NodeProto[] {
  const needed = new Set([output]);
  const keep = new Array<boolean>(nodes.length).fill(false);
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i]!;
    if (!(n.output ?? []).some((o) => needed.has(o))) continue;
    keep[i] = true;
    for (const v of n.input ?? []) if (v) needed.add(v);
    collectSubgraphInputs(n, needed);
  }
  return nodes.filter((_, i) => keep[i]);
}
