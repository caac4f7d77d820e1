import { decodeFloats } from '../onnx/dtype.js';
import type { Pool } from './reader.js';

const CHUNK_ELEMENTS = 1 << 20;

/**
 * Dot products of every pair of vectors (fp64 sums of fp32 products), streamed tensor by
 * tensor in chunks: memory is K chunks, whatever the model size.
 */
export async function computeGram(pool: Pool): Promise<number[][]> {
  const vs = pool.manifest.vectors;
  const K = vs.length;
  const gram = vs.map(() => new Array<number>(K).fill(0));
  const bufs = vs.map(() => new Float32Array(CHUNK_ELEMENTS));
  for (const t of pool.manifest.tensors) {
    if (!t.merged) continue;
    const n = t.shape.reduce((a, b) => a * b, 1);
    for (let start = 0; start < n; start += CHUNK_ELEMENTS) {
      const count = Math.min(CHUNK_ELEMENTS, n - start);
      for (let k = 0; k < K; k++) decodeFloats(t.dtype, await pool.readTensor(vs[k]!.blob, t, start, count), bufs[k]!, count);
      for (let i = 0; i < K; i++) {
        for (let j = i; j < K; j++) {
          const a = bufs[i]!;
          const b = bufs[j]!;
          let s = 0;
          for (let e = 0; e < count; e++) s += a[e]! * b[e]!;
          gram[i]![j] = gram[i]![j]! + s;
          if (i !== j) gram[j]![i] = gram[j]![i]! + s;
        }
      }
    }
  }
  return gram;
}

export function cosineMatrix(gram: number[][]): number[][] {
  return gram.map((row, i) => row.map((g, j) => g / (Math.sqrt(gram[i]![i]! * gram[j]![j]!) || 1)));
}
