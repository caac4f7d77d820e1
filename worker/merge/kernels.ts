import {
  bfloat16FromFloatBits,
  decodeFloats,
  type DtypeName,
  encodeFloats,
  halfFromFloatBits,
  halfToFloatTable,
  NATIVE_DTYPE,
  nativeKernels,
} from '../../shared/index.js';

const native = nativeKernels();

/**
 * out = base + Σ_k w_k·delta_k for one chunk: the native kernels (bit-identical, NaN payloads aside) for
 * float32/float16/bfloat16 when they are built and loadable, else mergeChunkJs. `threads` > 1 splits a
 * large chunk across that many native threads (elements are independent: the same bytes whatever the count).
 */
export function mergeChunk(
  dtype: DtypeName,
  base: Uint8Array,
  deltas: Uint8Array[],
  w: number[],
  out: Uint8Array,
  n: number,
  acc: Float32Array,
  tmp: Float32Array[],
  threads = 1,
): void {
  if (native && deltas.length <= 64 && (dtype === 'float32' || dtype === 'float16' || dtype === 'bfloat16')) {
    native.merge(NATIVE_DTYPE[dtype], base, deltas, Float64Array.from(w.slice(0, deltas.length)), out, n, threads);
    return;
  }
  mergeChunkJs(dtype, base, deltas, w, out, n, acc, tmp);
}

/**
 * mergeChunk's result widened to float32 in `out32` (what ONNX Runtime is fed when the weights are
 * graph inputs on the CPU): each element rounded to `dtype` first, so the values are exactly the
 * 16-bit merge's. `scratch` holds the `dtype` result on the JavaScript path (n elements of the dtype).
 */
export function mergeChunkWidened(
  dtype: DtypeName,
  base: Uint8Array,
  deltas: Uint8Array[],
  w: number[],
  out32: Float32Array,
  n: number,
  acc: Float32Array,
  tmp: Float32Array[],
  scratch: Uint8Array,
  threads = 1,
): void {
  const out = new Uint8Array(out32.buffer, out32.byteOffset, n * 4);
  if (native && (native.version ?? 0) >= 2 && deltas.length <= 64 && (dtype === 'float16' || dtype === 'bfloat16')) {
    native.merge(NATIVE_DTYPE[dtype], base, deltas, Float64Array.from(w.slice(0, deltas.length)), out, n, threads, true);
    return;
  }
  if (dtype === 'float32') {
    mergeChunk(dtype, base, deltas, w, out, n, acc, tmp, threads);
    return;
  }
  mergeChunk(dtype, base, deltas, w, scratch, n, acc, tmp, threads);
  decodeFloats(dtype, scratch, out32, n);
}

/**
 * out = base + Σ_k w_k·delta_k for one chunk of `n` elements, fp32 accumulation, every buffer in
 * the tensor's dtype. Buffers must be aligned to their element size (the pool layout is 64-byte
 * aligned and chunk buffers are fresh allocations). Vectors are taken four at a time with a
 * specialised loop: a generic loop over an array of vectors runs ~2.7× slower in V8.
 */
export function mergeChunkJs(
  dtype: DtypeName,
  base: Uint8Array,
  deltas: Uint8Array[],
  w: number[],
  out: Uint8Array,
  n: number,
  acc: Float32Array,
  tmp: Float32Array[],
): void {
  switch (dtype) {
    case 'float32': {
      const a = f32view(out, n);
      a.set(f32view(base, n));
      for (let k = 0; k < deltas.length; k += 4) {
        axpy4(
          a,
          n,
          deltas.slice(k, k + 4).map((d) => f32view(d, n)),
          w.slice(k, k + 4),
        );
      }
      return;
    }
    case 'float16': {
      // decode through a 64K table inside the fused loop: no separate decode passes
      const t = halfToFloatTable();
      const b = u16view(base, n);
      const d = deltas.map((x) => u16view(x, n));
      for (let k = 0; k < d.length || k === 0; k += 4) {
        const [d0, d1, d2, d3] = d.slice(k, k + 4);
        const [w0 = 0, w1 = 0, w2 = 0, w3 = 0] = w.slice(k, k + 4);
        const group = Math.min(4, d.length - k);
        if (k === 0) {
          if (group <= 0) for (let i = 0; i < n; i++) acc[i] = t[b[i]!]!;
          else if (group === 1) for (let i = 0; i < n; i++) acc[i] = t[b[i]!]! + w0 * t[d0![i]!]!;
          else if (group === 2) for (let i = 0; i < n; i++) acc[i] = t[b[i]!]! + w0 * t[d0![i]!]! + w1 * t[d1![i]!]!;
          else if (group === 3) for (let i = 0; i < n; i++) acc[i] = t[b[i]!]! + w0 * t[d0![i]!]! + w1 * t[d1![i]!]! + w2 * t[d2![i]!]!;
          else for (let i = 0; i < n; i++) acc[i] = t[b[i]!]! + w0 * t[d0![i]!]! + w1 * t[d1![i]!]! + w2 * t[d2![i]!]! + w3 * t[d3![i]!]!;
        } else {
          const group32 = d.slice(k, k + 4).map((x, j) => {
            const f = tmp[j]!;
            for (let i = 0; i < n; i++) f[i] = t[x[i]!]!;
            return f;
          });
          axpy4(acc, n, group32, [w0, w1, w2, w3].slice(0, group));
        }
      }
      const bits = new Uint32Array(acc.buffer, acc.byteOffset, n);
      const o = u16view(out, n);
      for (let i = 0; i < n; i++) o[i] = halfFromFloatBits(bits[i]!);
      return;
    }
    case 'bfloat16': {
      const bits = new Uint32Array(acc.buffer, acc.byteOffset, n);
      const b = u16view(base, n);
      for (let i = 0; i < n; i++) bits[i] = b[i]! << 16;
      for (let k = 0; k < deltas.length; k += 4) {
        const group = deltas.slice(k, k + 4).map((d, j) => {
          const t = new Uint32Array(tmp[j]!.buffer, tmp[j]!.byteOffset, n);
          const u = u16view(d, n);
          for (let i = 0; i < n; i++) t[i] = u[i]! << 16;
          return tmp[j]!;
        });
        axpy4(acc, n, group, w.slice(k, k + 4));
      }
      const o = u16view(out, n);
      for (let i = 0; i < n; i++) o[i] = bfloat16FromFloatBits(bits[i]!);
      return;
    }
    default: {
      // float64 (rare): the generic path, still fp32 accumulation
      decodeFloats(dtype, base, acc, n);
      for (const [k, d] of deltas.entries()) {
        decodeFloats(dtype, d, tmp[0]!, n);
        axpy4(acc, n, [tmp[0]!], [w[k]!]);
      }
      encodeFloats(dtype, acc, out, n);
    }
  }
}

/** acc += Σ w_j x_j for up to four vectors, one pass over memory. */
function axpy4(acc: Float32Array, n: number, x: Float32Array[], w: number[]): void {
  const [x0, x1, x2, x3] = x;
  const [w0 = 0, w1 = 0, w2 = 0, w3 = 0] = w;
  switch (x.length) {
    case 1:
      for (let i = 0; i < n; i++) acc[i] = acc[i]! + w0 * x0![i]!;
      return;
    case 2:
      for (let i = 0; i < n; i++) acc[i] = acc[i]! + w0 * x0![i]! + w1 * x1![i]!;
      return;
    case 3:
      for (let i = 0; i < n; i++) acc[i] = acc[i]! + w0 * x0![i]! + w1 * x1![i]! + w2 * x2![i]!;
      return;
    default:
      for (let i = 0; i < n; i++) acc[i] = acc[i]! + w0 * x0![i]! + w1 * x1![i]! + w2 * x2![i]! + w3 * x3![i]!;
  }
}

function f32view(b: Uint8Array, n: number): Float32Array {
  return new Float32Array(b.buffer, b.byteOffset, n);
}

function u16view(b: Uint8Array, n: number): Uint16Array {
  return new Uint16Array(b.buffer, b.byteOffset, n);
}
