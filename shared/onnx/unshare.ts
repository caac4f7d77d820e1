import type { OnnxModelFile } from './model-file.js';

/**
 * Undoes the initializer sharing of PyTorch's exporter: when two parameters hold equal values
 * (freshly initialised norms, tied weights), `torch.onnx.export` keeps one initializer and gives
 * the other's name to an `Identity` of it. A base and its checkpoints then export different graphs
 * as soon as training makes the values differ, and could not share a pool. Every `Identity` whose
 * input is an initializer becomes an initializer of its own under the Identity's output name
 * (same values, read from the same place), so that every parameter is a tensor that merges on its
 * own, as in the checkpoints. A graph output stays an Identity. The file is not changed.
 */
export function unshareInitializers(file: OnnxModelFile): OnnxModelFile {
  const graph = file.model.graph!;
  const protos = new Map((graph.initializer ?? []).map((t) => [t.name ?? '', t]));
  const described = new Map(file.initializers.map((t) => [t.name, t]));
  const outputs = new Set((graph.output ?? []).map((o) => o.name));
  const aliases = (graph.node ?? []).filter(
    (n) =>
      n.opType === 'Identity' &&
      (n.domain ?? '') === '' &&
      n.input?.length === 1 &&
      n.output?.length === 1 &&
      protos.has(n.input[0]!) &&
      !protos.has(n.output[0]!) &&
      !outputs.has(n.output[0]!),
  );
  if (aliases.length === 0) return file;
  const removed = new Set(aliases);
  const copies = aliases.map((n) => ({ from: n.input![0]!, name: n.output![0]! }));
  return {
    path: file.path,
    model: {
      ...file.model,
      graph: {
        ...graph,
        node: (graph.node ?? []).filter((n) => !removed.has(n)),
        // appended in the same order to both lists: the build pairs them by index
        initializer: [...(graph.initializer ?? []), ...copies.map(({ from, name }) => ({ ...protos.get(from)!, name }))],
      },
    },
    initializers: [...file.initializers, ...copies.map(({ from, name }) => ({ ...described.get(from)!, name }))],
    close: () => file.close(),
  };
}
