import { join } from 'node:path';
import protobuf from 'protobufjs';
import Long from 'long';
import { OptimerError } from '../errors.js';
import { packageRoot } from '../package-root.js';

// int64 fields decode as Long; tensor shapes and offsets here stay far below 2^53.
protobuf.util.Long = Long;
protobuf.configure();

const root = protobuf.loadSync(join(packageRoot, 'proto', 'onnx.proto'));
const ModelType = root.lookupType('onnx.ModelProto');
const GraphType = root.lookupType('onnx.GraphProto');

type Int64 = number | Long;

export interface StringStringEntry {
  key: string;
  value: string;
}

export interface TensorProto {
  name?: string;
  dims?: Int64[];
  dataType?: number;
  rawData?: Uint8Array;
  floatData?: number[];
  int32Data?: number[];
  int64Data?: Int64[];
  doubleData?: number[];
  uint64Data?: Int64[];
  stringData?: Uint8Array[];
  externalData?: StringStringEntry[];
  dataLocation?: number;
  segment?: unknown;
  docString?: string;
}

export interface TensorShapeDim {
  dimValue?: Int64;
  dimParam?: string;
}
export interface ValueInfoProto {
  name?: string;
  type?: { tensorType?: { elemType?: number; shape?: { dim?: TensorShapeDim[] } } };
}
export interface AttributeProto {
  name?: string;
  type?: number;
  [k: string]: unknown;
}
export interface NodeProto {
  input?: string[];
  output?: string[];
  name?: string;
  opType?: string;
  domain?: string;
  attribute?: AttributeProto[];
}
export interface GraphProto {
  node?: NodeProto[];
  name?: string;
  initializer?: TensorProto[];
  sparseInitializer?: unknown[];
  input?: ValueInfoProto[];
  output?: ValueInfoProto[];
  valueInfo?: ValueInfoProto[];
  [k: string]: unknown;
}
export interface ModelProto {
  irVersion?: Int64;
  opsetImport?: { domain?: string; version?: Int64 }[];
  producerName?: string;
  producerVersion?: string;
  graph?: GraphProto;
  metadataProps?: StringStringEntry[];
  [k: string]: unknown;
}

export function toNumber(v: Int64 | undefined | null): number {
  if (v === undefined || v === null) return 0;
  return typeof v === 'number' ? v : v.toNumber();
}

/** Decode an ONNX ModelProto; tensor bytes stay views into `bytes` (no copy). */
export function decodeModel(bytes: Uint8Array, where: string): ModelProto {
  try {
    return ModelType.decode(bytes) as unknown as ModelProto;
  } catch (e) {
    throw new OptimerError('BAD_ONNX', `${where}: not an ONNX model (${(e as Error).message})`, { cause: e });
  }
}

export function encodeModel(model: ModelProto): Uint8Array {
  return ModelType.encode(ModelType.fromObject(model)).finish();
}

/** Canonical bytes of a graph, for comparing two graphs structurally. */
export function encodeGraph(graph: GraphProto): Uint8Array {
  return GraphType.encode(GraphType.fromObject(graph)).finish();
}
