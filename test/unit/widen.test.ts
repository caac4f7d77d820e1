import { describe, expect, it } from 'vitest';
import { node, tensor, valueInfo } from '../../shared/onnx/build.js';
import { DataType } from '../../shared/onnx/dtype.js';
import { decodeModel, encodeModel, type ModelProto } from '../../shared/onnx/proto.js';
import { castBf16Inputs, widenedIo, widenTo32 } from '../../worker/eval/widen.js';

/** y = Concat(past, w) and, inside an If, Identity(past): a bfloat16 input used at two depths. */
function model(weight: 'float16' | 'float32'): ModelProto {
  const then = { name: 't', node: [node('Identity', ['past'], ['p_then'])], output: [valueInfo('p_then', 'bfloat16', [1, 2])] };
  const other = { name: 'e', node: [node('Identity', ['past'], ['p_else'])], output: [valueInfo('p_else', 'bfloat16', [1, 2])] };
  return {
    irVersion: 8,
    opsetImport: [{ domain: '', version: 17 }],
    graph: {
      name: 'g',
      initializer: [tensor('w', weight, [1, 2], new Uint8Array(weight === 'float16' ? 4 : 8))],
      node: [
        node('Cast', ['w'], ['w_bf16'], [{ name: 'to', type: 2, i: DataType.BFLOAT16 }]),
        node('Concat', ['past', 'w_bf16'], ['y'], [{ name: 'axis', type: 2, i: 0 }]),
        node(
          'If',
          ['flag'],
          ['z'],
          [
            { name: 'then_branch', type: 5, g: then },
            { name: 'else_branch', type: 5, g: other },
          ],
        ),
      ],
      input: [valueInfo('past', 'bfloat16', [1, 2]), valueInfo('flag', 'bool', [1])],
      output: [valueInfo('y', 'bfloat16', [2, 2]), valueInfo('z', 'bfloat16', [1, 2])],
    },
  };
}

describe('widen', () => {
  it('widen - a bfloat16 input becomes float32, cast to bfloat16 inside, at every use (subgraphs too)', () => {
    const g = decodeModel(castBf16Inputs(encodeModel(model('float32')), 'm')!, 'm').graph!;
    expect(g.input!.map((v) => [v.name, v.type!.tensorType!.elemType])).toEqual([
      ['past', DataType.FLOAT],
      ['flag', DataType.BOOL],
    ]);
    expect(g.node![0]).toMatchObject({ opType: 'Cast', input: ['past'], output: ['past__optimer_bf16'] });
    expect(g.node!.find((n) => n.opType === 'Concat')!.input).toEqual(['past__optimer_bf16', 'w_bf16']);
    const branches = g.node!.find((n) => n.opType === 'If')!.attribute!.map((a) => (a.g as { node: { input: string[] }[] }).node[0]!.input);
    expect(branches).toEqual([['past__optimer_bf16'], ['past__optimer_bf16']]);
    // outputs stay: the loss graph casts the logits and drops the rest
    expect(g.output!.map((v) => v.type!.tensorType!.elemType)).toEqual([DataType.BFLOAT16, DataType.BFLOAT16]);
    expect(castBf16Inputs(encodeModel({ ...model('float32'), graph: { ...model('float32').graph!, input: [] } }), 'm')).toBeNull();
  });

  it('widen - 16-bit weights keep their bytes under a new name, cast to float32; every 16-bit type becomes float32', () => {
    const g = decodeModel(widenTo32(encodeModel(model('float16')), 'm')!, 'm').graph!;
    expect(g.initializer!.map((t) => [t.name, t.dataType, t.rawData!.length])).toEqual([['w__optimer_w16', DataType.FLOAT16, 4]]);
    expect(g.node![0]).toMatchObject({ opType: 'Cast', input: ['w__optimer_w16'], output: ['w'] });
    expect(Number(g.node!.find((n) => n.output![0] === 'w_bf16')!.attribute![0]!.i)).toBe(DataType.FLOAT);
    for (const v of [...g.input!.slice(0, 1), ...g.output!]) expect(v.type!.tensorType!.elemType).toBe(DataType.FLOAT);
    // a float32 model with no 16-bit input or output is left alone
    const plain = model('float32');
    plain.graph!.input![0] = valueInfo('past', 'float32', [1, 2]);
    plain.graph!.output = [valueInfo('y', 'float32', [2, 2])];
    expect(widenTo32(encodeModel(plain), 'm')).toBeNull();
  });

  it('widen - the inputs a widened graph takes: 16-bit past as float32, or only the bfloat16 ones', () => {
    const io = {
      input: 'input_ids',
      output: 'logits',
      attentionMask: null,
      past: [
        { name: 'a', type: 'float16' as const, heads: 1, headDim: 2 },
        { name: 'b', type: 'bfloat16' as const, heads: 1, headDim: 2 },
      ],
    };
    expect(widenedIo(io).past!.map((p) => p.type)).toEqual(['float32', 'float32']);
    expect(widenedIo(io, 'bfloat16').past!.map((p) => p.type)).toEqual(['float16', 'float32']);
    expect(widenedIo({ ...io, past: [] })).toEqual({ ...io, past: [] });
  });
});
