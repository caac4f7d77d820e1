import { encodeFloats, type DtypeName } from '../onnx/dtype.js';
import { intAttr, node, tensor, valueInfo } from '../onnx/build.js';
import type { ModelProto, NodeProto, TensorProto } from '../onnx/proto.js';
import { paramNames, paramShape, type FamilyParams, type FamilyShape } from './model.js';

function int64s(values: number[]): Uint8Array {
  return new Uint8Array(BigInt64Array.from(values.map(BigInt)).buffer);
}

/**
 * The family model as an ONNX graph: input `input_ids` int64 [batch, seq], output `logits`
 * float32 [batch, seq, vocab]. With dtype float16 the weights are stored in half precision and
 * cast to float32 inside the graph. The int64 constants of Slice and Pad are initializers too,
 * as torch.onnx.export leaves them, so pools must copy (not merge) non-float tensors.
 */
export function familyToOnnx(
  s: FamilyShape,
  p: FamilyParams,
  dtype: 'float32' | 'float16' = 'float32',
  name = 'optimer-family',
): ModelProto {
  const initializer: TensorProto[] = [];
  const nodes: NodeProto[] = [];
  const w: Record<string, string> = {};
  for (const pn of paramNames) {
    const values = Float32Array.from(p[pn]);
    const bytes = new Uint8Array(values.length * (dtype === 'float32' ? 4 : 2));
    encodeFloats(dtype as DtypeName, values, bytes, values.length);
    initializer.push(tensor(pn, dtype, paramShape(s, pn), bytes));
    if (dtype === 'float32') w[pn] = pn;
    else {
      w[pn] = `${pn}_f32`;
      nodes.push(node('Cast', [pn], [w[pn]], [intAttr('to', 1)]));
    }
  }
  initializer.push(
    tensor('slice_starts', 'int64', [1], int64s([0])),
    tensor('slice_ends', 'int64', [1], int64s([-1])),
    tensor('slice_axes', 'int64', [1], int64s([1])),
    tensor('prev_pads', 'int64', [6], int64s([0, 1, 0, 0, 0, 0])),
  );
  nodes.push(
    node('Gather', [w.E!, 'input_ids'], ['emb'], [intAttr('axis', 0)]),
    node('Slice', ['emb', 'slice_starts', 'slice_ends', 'slice_axes'], ['emb_head']),
    node('Pad', ['emb_head', 'prev_pads'], ['prev']),
    node('MatMul', ['emb', w.A!], ['za']),
    node('MatMul', ['prev', w.B!], ['zb']),
    node('Add', ['za', 'zb'], ['zab']),
    node('Add', ['zab', w.b!], ['z']),
    node('Tanh', ['z'], ['h']),
    node('MatMul', ['h', w.U!], ['hu']),
    node('Add', ['hu', w.c!], ['logits']),
  );
  return {
    irVersion: 8,
    opsetImport: [{ domain: '', version: 17 }],
    producerName: 'optimer',
    producerVersion: '0.1.0',
    graph: {
      name,
      node: nodes,
      initializer,
      input: [valueInfo('input_ids', 'int64', ['batch', 'seq'])],
      output: [valueInfo('logits', 'float32', ['batch', 'seq', s.vocab])],
    },
    metadataProps: [{ key: 'optimer.context_length', value: String(s.contextLength) }],
  };
}
