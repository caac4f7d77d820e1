import { OptimerError } from '../errors.js';

/** ONNX TensorProto.DataType numbers (onnx.proto). */
export const DataType = {
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  UINT16: 4,
  INT16: 5,
  INT32: 6,
  INT64: 7,
  STRING: 8,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  UINT32: 12,
  UINT64: 13,
  BFLOAT16: 16,
} as const;

/** Dtype names used in manifests and messages (numpy / torch spelling). */
export type DtypeName =
  | 'float32'
  | 'float16'
  | 'bfloat16'
  | 'float64'
  | 'uint8'
  | 'int8'
  | 'uint16'
  | 'int16'
  | 'int32'
  | 'int64'
  | 'bool'
  | 'uint32'
  | 'uint64';

const byCode = new Map<number, { name: DtypeName; bytes: number }>([
  [DataType.FLOAT, { name: 'float32', bytes: 4 }],
  [DataType.FLOAT16, { name: 'float16', bytes: 2 }],
  [DataType.BFLOAT16, { name: 'bfloat16', bytes: 2 }],
  [DataType.DOUBLE, { name: 'float64', bytes: 8 }],
  [DataType.UINT8, { name: 'uint8', bytes: 1 }],
  [DataType.INT8, { name: 'int8', bytes: 1 }],
  [DataType.UINT16, { name: 'uint16', bytes: 2 }],
  [DataType.INT16, { name: 'int16', bytes: 2 }],
  [DataType.INT32, { name: 'int32', bytes: 4 }],
  [DataType.INT64, { name: 'int64', bytes: 8 }],
  [DataType.BOOL, { name: 'bool', bytes: 1 }],
  [DataType.UINT32, { name: 'uint32', bytes: 4 }],
  [DataType.UINT64, { name: 'uint64', bytes: 8 }],
]);
const byName = new Map([...byCode].map(([code, d]) => [d.name, { code, bytes: d.bytes }]));

export function dtypeOf(code: number, where: string): DtypeName {
  const d = byCode.get(code);
  if (!d)
    throw new OptimerError(
      'BAD_ONNX',
      `${where}: unsupported ONNX data type ${code} (string, complex and 8-bit float tensors cannot be pooled)`,
    );
  return d.name;
}

export function dtypeCode(name: DtypeName): number {
  return byName.get(name)!.code;
}

export function dtypeBytes(name: DtypeName): number {
  return byName.get(name)!.bytes;
}

export function isDtypeName(s: string): s is DtypeName {
  return byName.has(s as DtypeName);
}

/** Floating-point tensors are merged; everything else must be identical and is copied. */
export function isMergeable(name: DtypeName): boolean {
  return name === 'float32' || name === 'float16' || name === 'bfloat16' || name === 'float64';
}

// ---- conversions between stored bytes and fp32 accumulators --------------------------------

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float16 bits → float32, via a 64K table built once (exact for every half value). */
let halfTable: Float32Array | undefined;
export function halfToFloatTable(): Float32Array {
  if (halfTable) return halfTable;
  halfTable = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    let bits: number;
    if (exp === 0) {
      if (frac === 0) bits = sign;
      else {
        // subnormal half: normalise
        let e = -1;
        let f = frac;
        do {
          f <<= 1;
          e++;
        } while ((f & 0x400) === 0);
        bits = sign | ((127 - 15 - e) << 23) | ((f & 0x3ff) << 13);
      }
    } else if (exp === 31) bits = sign | 0x7f800000 | (frac << 13);
    else bits = sign | ((exp + 127 - 15) << 23) | (frac << 13);
    u32[0] = bits >>> 0;
    halfTable[h] = f32[0]!;
  }
  return halfTable;
}

/** float32 → float16 bits, round to nearest even (as numpy and torch do). */
export function floatToHalf(x: number): number {
  f32[0] = x;
  return halfFromFloatBits(u32[0]!);
}

/** The float16 bits nearest (ties to even) to the float32 with bit pattern `b`. */
export function halfFromFloatBits(b: number): number {
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const frac = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (frac ? 0x200 : 0); // inf / nan
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow → inf
  if (e <= 0) {
    if (e < -10) return sign; // underflows to zero
    const m = frac | 0x800000;
    const shift = 14 - e;
    let h = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (frac >>> 13);
  const rem = frac & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++; // may carry into the exponent: correct
  return sign | h;
}

/** float32 → bfloat16 bits, round to nearest even. */
export function floatToBfloat16(x: number): number {
  f32[0] = x;
  return bfloat16FromFloatBits(u32[0]!);
}

export function bfloat16FromFloatBits(b: number): number {
  if ((b & 0x7f800000) === 0x7f800000 && b & 0x7fffff) return (b >>> 16) | 0x40; // keep NaN a NaN
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Decode `count` elements of a float dtype from `bytes` into `out` (fp32). */
export function decodeFloats(dtype: DtypeName, bytes: Uint8Array, out: Float32Array, count: number): void {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case 'float32':
      // little-endian hosts only (x86-64, arm64): view the bytes when aligned, else copy them
      if (bytes.byteOffset % 4 === 0) out.set(new Float32Array(bytes.buffer, bytes.byteOffset, count));
      else new Uint8Array(out.buffer, out.byteOffset, count * 4).set(bytes.subarray(0, count * 4));
      return;
    case 'float64':
      for (let i = 0; i < count; i++) out[i] = dv.getFloat64(i * 8, true);
      return;
    case 'float16': {
      const t = halfToFloatTable();
      for (let i = 0; i < count; i++) out[i] = t[dv.getUint16(i * 2, true)]!;
      return;
    }
    case 'bfloat16':
      for (let i = 0; i < count; i++) {
        u32[0] = dv.getUint16(i * 2, true) << 16;
        out[i] = f32[0]!;
      }
      return;
    default:
      throw new Error(`decodeFloats: ${dtype} is not a float dtype`);
  }
}

/** Encode `count` fp32 values into `bytes` in a float dtype (round to nearest even). */
export function encodeFloats(dtype: DtypeName, values: Float32Array, bytes: Uint8Array, count: number): void {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case 'float32':
      bytes.set(new Uint8Array(values.buffer, values.byteOffset, count * 4));
      return;
    case 'float64':
      for (let i = 0; i < count; i++) dv.setFloat64(i * 8, values[i]!, true);
      return;
    case 'float16':
      for (let i = 0; i < count; i++) dv.setUint16(i * 2, floatToHalf(values[i]!), true);
      return;
    case 'bfloat16':
      for (let i = 0; i < count; i++) dv.setUint16(i * 2, floatToBfloat16(values[i]!), true);
      return;
    default:
      throw new Error(`encodeFloats: ${dtype} is not a float dtype`);
  }
}
