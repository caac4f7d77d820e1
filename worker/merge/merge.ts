import { decodeFloats, dtypeBytes, encodeFloats } from '../../shared/onnx/dtype.js';
import type { Pool } from '../../shared/pool/reader.js';
import type { TensorEntry } from '../../shared/pool/manifest.js';
import type { MergeWeights } from '../../shared/weights.js';

/** Elements merged at once: bounds memory to a few chunk buffers whatever the tensor size. */
const CHUNK_ELEMENTS = 1 << 20;

/** Receives merged bytes destined for `offset` of the merged-weights layout. */
export type MergeSink = (offset: number, bytes: Uint8Array) => void | Promise<void>;

/**
 * θ(w) = θ_base + Σ_i w_i·v_i, tensor by tensor and chunk by chunk: fp32 accumulation, output in
 * the tensor's own dtype, vectors read from the shards as they are needed (never K models in
 * memory). With all weights 0 the result is the base's bytes exactly. Non-float tensors are not
 * in the layout: they stay inline in the pool's graph.
 */
export async function mergeWeights(pool: Pool, weights: MergeWeights, sink: MergeSink): Promise<void> {
  const m = pool.manifest;
  const active = m.vectors.filter((v) => (weights.get(v.name) ?? 0) !== 0).map((v) => ({ blob: v.blob, w: weights.get(v.name)! }));
  const acc = new Float32Array(CHUNK_ELEMENTS);
  const delta = new Float32Array(CHUNK_ELEMENTS);
  const raw = new Uint8Array(CHUNK_ELEMENTS * 8);
  const outBytes = new Uint8Array(CHUNK_ELEMENTS * 8);
  for (const t of m.tensors) {
    if (t.offset === null) continue; // not merged: inline in the graph
    if (active.length === 0) {
      await copyBase(pool, t, t.offset, sink, raw);
      continue;
    }
    const size = dtypeBytes(t.dtype);
    const n = t.bytes / size;
    for (let start = 0; start < n; start += CHUNK_ELEMENTS) {
      const count = Math.min(CHUNK_ELEMENTS, n - start);
      const bytes = count * size;
      decodeFloats(t.dtype, await pool.readTensor(m.base.blob, t, start, count, raw.subarray(0, bytes)), acc, count);
      for (const { blob, w } of active) {
        decodeFloats(t.dtype, await pool.readTensor(blob, t, start, count, raw.subarray(0, bytes)), delta, count);
        axpy(acc, delta, w, count);
      }
      encodeFloats(t.dtype, acc, outBytes, count);
      await sink(t.offset + start * size, outBytes.subarray(0, bytes));
    }
  }
}

/** The merged weights as one buffer in the pool's external-data layout. */
export async function mergeToBuffer(pool: Pool, weights: MergeWeights): Promise<Uint8Array> {
  const out = new Uint8Array(pool.manifest.weightsBytes);
  await mergeWeights(pool, weights, (offset, bytes) => out.set(bytes, offset));
  return out;
}

function axpy(acc: Float32Array, x: Float32Array, w: number, n: number): void {
  for (let i = 0; i < n; i++) acc[i] = acc[i]! + w * x[i]!;
}

async function copyBase(pool: Pool, t: TensorEntry, layoutOffset: number, sink: MergeSink, scratch: Uint8Array): Promise<void> {
  const from = pool.manifest.base.blob.tensors[t.name]!;
  for (let at = 0; at < t.bytes; at += scratch.length) {
    const n = Math.min(scratch.length, t.bytes - at);
    await sink(layoutOffset + at, await pool.read(pool.manifest.base.blob, from + at, n, scratch.subarray(0, n)));
  }
}
