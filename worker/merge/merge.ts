import { dtypeBytes, type MergeWeights, type Pool } from '../../shared/index.js';
import { mergeChunk } from './kernels.js';

/** Elements merged at once: bounds memory to a few chunk buffers whatever the tensor size. */
const CHUNK_ELEMENTS = 1 << 20;

/** Receives merged bytes destined for `offset` of the merged-weights layout. */
export type MergeSink = (offset: number, bytes: Uint8Array) => void | Promise<void>;

/**
 * θ(w) = θ_base + Σ_i w_i·v_i, tensor by tensor and chunk by chunk: fp32 accumulation, output in
 * the tensor's own dtype, vectors read from the shards as they are needed (never K models in
 * memory). With all weights 0 the result is the base's bytes exactly. Non-float tensors are not
 * in the layout: they stay inline in the pool's graph.
 *
 * Writes into `dest` (the whole layout, `manifest.weightsBytes`) when given, else hands each
 * merged chunk to `sink` (for streaming to a file).
 */
async function merge(pool: Pool, weights: MergeWeights, dest: Uint8Array | undefined, sink: MergeSink | undefined): Promise<void> {
  const m = pool.manifest;
  const active = m.vectors.filter((v) => (weights.get(v.name) ?? 0) !== 0);
  const w = active.map((v) => weights.get(v.name)!);
  // chunk buffers sized to the largest tensor, up to CHUNK_ELEMENTS: small models stay cheap
  const chunk = Math.min(CHUNK_ELEMENTS, Math.max(1, ...m.tensors.map((t) => (t.offset === null ? 0 : t.bytes / dtypeBytes(t.dtype)))));
  const maxBytes = chunk * 8;
  const baseRaw = new Uint8Array(maxBytes);
  const deltaRaw = active.map(() => new Uint8Array(maxBytes));
  const scratch = dest ? undefined : new Uint8Array(maxBytes);
  const acc = new Float32Array(chunk);
  const tmp = [0, 1, 2, 3].map(() => new Float32Array(chunk));
  for (const t of m.tensors) {
    if (t.offset === null) continue; // not merged: inline in the graph
    const size = dtypeBytes(t.dtype);
    const n = t.bytes / size;
    for (let start = 0; start < n; start += chunk) {
      const count = Math.min(chunk, n - start);
      const bytes = count * size;
      const at = t.offset + start * size;
      const out = dest ? dest.subarray(at, at + bytes) : scratch!.subarray(0, bytes);
      if (active.length === 0) {
        await pool.readTensor(m.base.blob, t, start, count, out);
      } else {
        const base = await pool.readTensor(m.base.blob, t, start, count, baseRaw.subarray(0, bytes));
        const deltas = await Promise.all(active.map((v, k) => pool.readTensor(v.blob, t, start, count, deltaRaw[k]!.subarray(0, bytes))));
        mergeChunk(t.dtype, base, deltas, w, out, count, acc, tmp);
      }
      if (sink) await sink(at, out);
    }
  }
}

/** Streams the merged weights chunk by chunk to `sink` (offsets in the layout). */
export function mergeWeights(pool: Pool, weights: MergeWeights, sink: MergeSink): Promise<void> {
  return merge(pool, weights, undefined, sink);
}

/** Merges into `dest` (reused across trials to avoid page faults), which must hold the layout. */
export async function mergeInto(pool: Pool, weights: MergeWeights, dest: Uint8Array): Promise<Uint8Array> {
  if (dest.length < pool.manifest.weightsBytes || dest.byteOffset % 8 !== 0)
    throw new RangeError('mergeInto: destination too small or misaligned');
  await merge(pool, weights, dest, undefined);
  return dest.subarray(0, pool.manifest.weightsBytes);
}

/** The merged weights as one new buffer in the pool's external-data layout. */
export function mergeToBuffer(pool: Pool, weights: MergeWeights): Promise<Uint8Array> {
  return mergeInto(pool, weights, new Uint8Array(pool.manifest.weightsBytes));
}
