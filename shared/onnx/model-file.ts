import { open, readFile, type FileHandle } from 'node:fs/promises';
import { dirname, isAbsolute, normalize, resolve, sep } from 'node:path';
import { OptimerError } from '../errors.js';
import { dtypeBytes, dtypeOf, type DtypeName } from './dtype.js';
import { decodeModel, toNumber, type ModelProto, type TensorProto } from './proto.js';

/** An initializer of a model on disk; its bytes are read only when asked for. */
export interface Initializer {
  name: string;
  dtype: DtypeName;
  shape: number[];
  bytes: number;
  /**
   * The tensor's values as little-endian bytes, whichever way the file stores them. External data is
   * read into `into` when it is given and large enough (no allocation); inline data is returned as is.
   */
  read(into?: Uint8Array): Promise<Uint8Array>;
  /**
   * Bytes [start, start + length) of the values, copied into `into` (at least `length` long, from
   * its start); returns that view of `into`. The pool build reads tensors chunk by chunk with it.
   */
  readAt(into: Uint8Array, start: number, length: number): Promise<Uint8Array>;
}

export interface OnnxModelFile {
  path: string;
  model: ModelProto;
  initializers: Initializer[];
  close(): Promise<void>;
}

/**
 * Opens an ONNX model as torch.onnx.export writes it: initializers inline (raw_data or typed
 * fields) or in external data files beside the model. Nothing is trusted: sizes are checked
 * against shapes and external references may not leave the model's folder.
 */
export async function openOnnxModel(path: string): Promise<OnnxModelFile> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new OptimerError('BAD_ONNX', `${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { cause: e });
  }
  const model = decodeModel(bytes, path);
  const graph = model.graph;
  if (!graph) throw new OptimerError('BAD_ONNX', `${path}: the model has no graph`);
  if ((graph.sparseInitializer?.length ?? 0) > 0) {
    throw new OptimerError('BAD_ONNX', `${path}: sparse initializers are not supported`);
  }
  const handles = new Map<string, Promise<FileHandle>>();
  const dir = dirname(resolve(path));
  const initializers = (graph.initializer ?? []).map((t, i) => describeInitializer(t, i, path, dir, handles));
  return {
    path,
    model,
    initializers,
    async close() {
      const all = await Promise.allSettled(handles.values());
      await Promise.all(all.map((h) => (h.status === 'fulfilled' ? h.value.close() : undefined)));
    },
  };
}

function describeInitializer(
  t: TensorProto,
  index: number,
  path: string,
  dir: string,
  handles: Map<string, Promise<FileHandle>>,
): Initializer {
  const name = t.name ?? '';
  const where = `${path}: initializer ${name ? `'${name}'` : `#${index}`}`;
  if (!name) throw new OptimerError('BAD_ONNX', `${where} has no name`);
  if (t.segment) throw new OptimerError('BAD_ONNX', `${where} is segmented, which is not supported`);
  const dtype = dtypeOf(t.dataType ?? 0, where);
  const shape = (t.dims ?? []).map(toNumber);
  if (shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
    throw new OptimerError('BAD_ONNX', `${where} has an invalid shape [${shape.join(', ')}]`);
  }
  const elements = shape.reduce((a, b) => a * b, 1);
  const bytes = elements * dtypeBytes(dtype);

  let read: (into?: Uint8Array) => Promise<Uint8Array>;
  if (t.dataLocation === 1) {
    const readAt = externalReader(t, where, dir, bytes, handles);
    return {
      name,
      dtype,
      shape,
      bytes,
      read: (into) => readAt(into && into.length >= bytes ? into : new Uint8Array(bytes), 0, bytes),
      readAt,
    };
  } else if (t.rawData && t.rawData.length > 0) {
    if (t.rawData.length !== bytes) {
      throw new OptimerError(
        'BAD_ONNX',
        `${where}: raw_data holds ${t.rawData.length} bytes, shape [${shape.join(', ')}] of ${dtype} needs ${bytes}`,
      );
    }
    const raw = t.rawData;
    read = async () => raw;
  } else {
    const raw = typedFieldBytes(t, dtype, elements, where);
    read = async () => raw;
  }
  return {
    name,
    dtype,
    shape,
    bytes,
    read,
    async readAt(into, start, length) {
      const raw = await read();
      const out = into.subarray(0, length);
      out.set(raw.subarray(start, start + length));
      return out;
    },
  };
}

function externalReader(
  t: TensorProto,
  where: string,
  dir: string,
  bytes: number,
  handles: Map<string, Promise<FileHandle>>,
): (into: Uint8Array, start: number, length: number) => Promise<Uint8Array> {
  const info = new Map((t.externalData ?? []).map((e) => [e.key, e.value]));
  const location = info.get('location');
  if (!location) throw new OptimerError('BAD_ONNX', `${where}: external data without a location`);
  if (isAbsolute(location) || normalize(location).split(/[\\/]/).includes('..')) {
    throw new OptimerError('BAD_ONNX', `${where}: external data location '${location}' must stay inside the model's folder`);
  }
  const offset = Number(info.get('offset') ?? '0');
  const length = info.has('length') ? Number(info.get('length')) : bytes;
  if (!Number.isSafeInteger(offset) || offset < 0)
    throw new OptimerError('BAD_ONNX', `${where}: bad external data offset '${info.get('offset')}'`);
  if (length !== bytes) {
    throw new OptimerError('BAD_ONNX', `${where}: external data length ${length} does not match its shape (${bytes} bytes)`);
  }
  const file = resolve(dir, location);
  if (!file.startsWith(dir + sep)) {
    throw new OptimerError('BAD_ONNX', `${where}: external data location '${location}' must stay inside the model's folder`);
  }
  // opened and checked against the file's size once, on the first read (a tensor read in chunks stats once)
  let checked: Promise<FileHandle> | undefined;
  const check = async (): Promise<FileHandle> => {
    let handle = handles.get(file);
    if (!handle) {
      handle = open(file, 'r');
      handles.set(file, handle);
      handle.catch(() => undefined); // reported below, where it is awaited
    }
    let fh: FileHandle;
    try {
      fh = await handle;
    } catch (e) {
      throw new OptimerError('BAD_ONNX', `${where}: cannot open external data file ${file}`, { cause: e });
    }
    const size = (await fh.stat()).size;
    if (offset + bytes > size) {
      throw new OptimerError(
        'BAD_ONNX',
        `${where}: external data [${offset}, ${offset + bytes}) runs past the end of ${location} (${size} bytes)`,
      );
    }
    return fh;
  };
  return async (into: Uint8Array, start: number, length: number) => {
    if (!checked) {
      checked = check();
      checked.catch(() => {
        checked = undefined; // a failed check is reported to each read that awaits it, and tried again after
      });
    }
    const fh = await checked;
    const out = into.subarray(0, length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await fh.read(out, done, length - done, offset + start + done);
      if (bytesRead === 0) throw new OptimerError('BAD_ONNX', `${where}: short read from ${location}`);
      done += bytesRead;
    }
    return out;
  };
}

/** Values stored in TensorProto's typed fields (float_data, int32_data, ...) as raw bytes. */
function typedFieldBytes(t: TensorProto, dtype: DtypeName, elements: number, where: string): Uint8Array {
  const out = new Uint8Array(elements * dtypeBytes(dtype));
  const dv = new DataView(out.buffer);
  const need = (arr: unknown[] | undefined, field: string): unknown[] => {
    const a = arr ?? [];
    if (a.length !== elements) {
      throw new OptimerError('BAD_ONNX', `${where}: ${field} holds ${a.length} values, shape needs ${elements}`);
    }
    return a;
  };
  switch (dtype) {
    case 'float32':
      need(t.floatData, 'float_data').forEach((v, i) => {
        dv.setFloat32(i * 4, v as number, true);
      });
      break;
    case 'float64':
      need(t.doubleData, 'double_data').forEach((v, i) => {
        dv.setFloat64(i * 8, v as number, true);
      });
      break;
    case 'int64':
      need(t.int64Data, 'int64_data').forEach((v, i) => {
        dv.setBigInt64(i * 8, BigInt(String(v)), true);
      });
      break;
    case 'uint32':
      need(t.uint64Data, 'uint64_data').forEach((v, i) => {
        dv.setUint32(i * 4, toNumber(v as number), true);
      });
      break;
    case 'uint64':
      need(t.uint64Data, 'uint64_data').forEach((v, i) => {
        dv.setBigUint64(i * 8, BigInt.asUintN(64, BigInt(String(v))), true);
      });
      break;
    case 'int32':
      need(t.int32Data, 'int32_data').forEach((v, i) => {
        dv.setInt32(i * 4, v as number, true);
      });
      break;
    case 'float16':
    case 'bfloat16':
    case 'uint16':
    case 'int16':
      // 16-bit types keep their bit pattern in int32_data (onnx.proto)
      need(t.int32Data, 'int32_data').forEach((v, i) => {
        dv.setUint16(i * 2, (v as number) & 0xffff, true);
      });
      break;
    case 'uint8':
    case 'int8':
    case 'bool':
      need(t.int32Data, 'int32_data').forEach((v, i) => {
        dv.setUint8(i, (v as number) & 0xff);
      });
      break;
  }
  return out;
}
