import { writeFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { dtypeCode, type DtypeName } from './dtype.js';
import { encodeModel, type AttributeProto, type ModelProto, type NodeProto, type TensorProto, type ValueInfoProto } from './proto.js';

/** Small builders for ONNX protos: enough to write the family's models and merged exports. */

export function tensor(name: string, dtype: DtypeName, dims: number[], raw: Uint8Array): TensorProto {
  return { name, dataType: dtypeCode(dtype), dims, rawData: raw };
}

export function node(opType: string, inputs: string[], outputs: string[], attribute: AttributeProto[] = []): NodeProto {
  return { opType, input: inputs, output: outputs, name: `${opType}_${outputs[0]}`, attribute };
}

export function intAttr(name: string, value: number): AttributeProto {
  return { name, type: 2, i: value };
}

export function valueInfo(name: string, dtype: DtypeName, dims: (number | string)[]): ValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: dtypeCode(dtype),
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

/** Points `t` at `length` bytes at `offset` of an external data file instead of inline data. */
export function setExternal(t: TensorProto, location: string, offset: number, length: number): TensorProto {
  const { rawData: _drop, ...rest } = t;
  return {
    ...rest,
    dataLocation: 1,
    externalData: [
      { key: 'location', value: location },
      { key: 'offset', value: String(offset) },
      { key: 'length', value: String(length) },
    ],
  };
}

/**
 * Writes a model; with `externalData`, every initializer's bytes go to that file beside the
 * model (as torch.onnx.export does for models over 2 GB), each at a 64-byte aligned offset.
 */
export async function writeModel(path: string, model: ModelProto, options: { externalData?: boolean } = {}): Promise<void> {
  if (!options.externalData) {
    await writeFile(path, encodeModel(model));
    return;
  }
  const dataPath = `${path}.data`;
  const location = basename(dataPath);
  const chunks: Uint8Array[] = [];
  let offset = 0;
  const inits = (model.graph?.initializer ?? []).map((t) => {
    const raw = t.rawData ?? new Uint8Array(0);
    const pad = (64 - (offset % 64)) % 64;
    if (pad) chunks.push(new Uint8Array(pad));
    offset += pad;
    chunks.push(raw);
    const ext = setExternal(t, location, offset, raw.length);
    offset += raw.length;
    return ext;
  });
  await writeFile(dataPath, Buffer.concat(chunks));
  await writeFile(path, encodeModel({ ...model, graph: { ...model.graph, initializer: inits } }));
}
