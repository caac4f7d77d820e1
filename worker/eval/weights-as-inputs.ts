import { decodeModel, encodeModel, type TensorEntry, type ValueInfoProto, valueInfo } from '../../shared/index.js';

/**
 * The pool's graph with its merged weights as graph inputs instead of initializers: each tensor of
 * the merged-weights layout (`offset` set) is removed from the initializers and declared as an input
 * of its own name, type and shape; everything else (inline non-float tensors, nodes) is unchanged.
 * A 16-bit input is then widened to float32 with the rest of the graph (widenTo32), so a CPU
 * session takes float32 weights that it neither copies nor folds: one session serves every trial
 * of a pool, and a trial only merges into the arrays its input tensors wrap.
 */
export function weightsAsInputs(bytes: Uint8Array, tensors: readonly TensorEntry[], where: string): Uint8Array {
  const model = decodeModel(bytes, where);
  const g = model.graph!;
  const merged = new Map(tensors.filter((t) => t.offset !== null).map((t) => [t.name, t]));
  g.initializer = (g.initializer ?? []).filter((t) => !merged.has(t.name ?? ''));
  // an initializer also listed as an input (IR < 4) is replaced by its declaration below
  const inputs: ValueInfoProto[] = (g.input ?? []).filter((v) => !merged.has(v.name ?? ''));
  for (const t of merged.values()) inputs.push(valueInfo(t.name, t.dtype, t.shape));
  g.input = inputs;
  return encodeModel(model);
}
