import {
  type BlobRef,
  dtypeBytes,
  OptimerError,
  type Pool,
  ShardMaps,
  type TensorEntry,
  type TensorWeighting,
  type VectorEntry,
  weightParts,
} from '../../shared/index.js';
import { mergeChunk, mergeChunkWidened } from './kernels.js';

/** Elements merged at once: bounds memory to a few chunk buffers whatever the tensor size. */
const CHUNK_ELEMENTS = 1 << 20;

/**
 * The merged weights, one buffer per part of the pool's layout (`manifest.weightParts`), part i
 * being ONNX Runtime's external data `partName(i)`. Parts keep each buffer under JavaScript's
 * 4 GiB limit.
 */
export type MergedWeights = Uint8Array[];

/** Receives merged bytes destined for `offset` of the merged-weights layout. */
export type MergeSink = (offset: number, bytes: Uint8Array) => void | Promise<void>;

/**
 * The merged weights as float32, one array per merged tensor (by name): what ONNX Runtime's CPU
 * provider is fed when the weights are graph inputs. A 16-bit tensor's values are exactly its
 * 16-bit merge's, widened.
 */
export type WidenedWeights = ReadonlyMap<string, Float32Array>;

/** Where merge() puts its output: the layout's parts, float32 arrays per tensor, or a sink. */
type MergeTarget = { parts: readonly Uint8Array[] } | { widened: WidenedWeights } | { sink: MergeSink };

/**
 * θ = θ_base + Σ_k w_k(t)·v_k, tensor by tensor and chunk by chunk: fp32 accumulation, output in
 * the tensor's own dtype, vectors read from the shards as they are needed (never K models in
 * memory). The weights come from `weighting`, once per tensor; on each tensor only the vectors
 * with a non-zero weight are read, accumulated in pool order (whatever the weighting's order),
 * and with none the result is the base's bytes exactly. Non-float tensors are not in the layout:
 * they stay inline in the pool's graph.
 *
 * Writes into the layout's parts (one buffer per part), into float32 arrays per tensor, or hands
 * each merged chunk to a sink (for streaming to a file).
 */
async function merge(
  pool: Pool,
  weighting: TensorWeighting,
  target: MergeTarget,
  signal: AbortSignal | undefined,
  threads = 1,
): Promise<void> {
  const m = pool.manifest;
  const vectors = resolveVectors(pool, weighting);
  const parts = weightParts(m);
  // chunk buffers sized to the largest tensor, up to CHUNK_ELEMENTS: small models stay cheap
  const chunk = Math.min(CHUNK_ELEMENTS, Math.max(1, ...m.tensors.map((t) => (t.offset === null ? 0 : t.bytes / dtypeBytes(t.dtype)))));
  const maxBytes = chunk * 8;
  const baseRaw = new Uint8Array(maxBytes);
  const deltaRaw: Uint8Array[] = []; // one per vector active on some tensor so far
  const dest = 'parts' in target ? target.parts : undefined;
  const widened = 'widened' in target ? target.widened : undefined;
  const sink = 'sink' in target ? target.sink : undefined;
  const scratch = dest ? undefined : new Uint8Array(maxBytes);
  const acc = new Float32Array(chunk);
  const tmp = [0, 1, 2, 3].map(() => new Float32Array(chunk));
  const maps = new ShardMaps(pool);
  try {
    for (const t of m.tensors) {
      if (t.offset === null) continue; // not merged: inline in the graph
      signal?.throwIfAborted(); // a closing worker stops here rather than finish a merge it will throw away
      const { active, w } = activeOn(t, weighting, vectors);
      while (deltaRaw.length < active.length) deltaRaw.push(new Uint8Array(maxBytes));
      const size = dtypeBytes(t.dtype);
      const n = t.bytes / size;
      const part = t.part ?? 0;
      const into = dest?.[part];
      const local = t.offset - parts[part]!.start; // the tensor's offset in its part's buffer
      const wide = widened?.get(t.name);
      if (widened && !wide) throw new RangeError(`merge: no float32 array for tensor '${t.name}'`);
      for (let start = 0; start < n; start += chunk) {
        const count = Math.min(chunk, n - start);
        const bytes = count * size;
        const at = t.offset + start * size;
        const out = wide
          ? undefined
          : into
            ? into.subarray(local + start * size, local + start * size + bytes)
            : scratch!.subarray(0, bytes);
        // in place from the page cache where the shard can be mapped, else read into a chunk buffer
        const chunkOf = (blob: BlobRef, buf: Uint8Array) =>
          maps.tensorView(blob, t, start, count) ?? pool.readTensor(blob, t, start, count, buf.subarray(0, bytes));
        if (out && active.length === 0) {
          out.set(await chunkOf(m.base.blob, out)); // the base's bytes exactly (a read fills `out` itself)
        } else {
          const base = await chunkOf(m.base.blob, baseRaw);
          const deltas = await Promise.all(active.map((v, k) => chunkOf(v.blob, deltaRaw[k]!)));
          if (wide) mergeChunkWidened(t.dtype, base, deltas, w, wide.subarray(start, start + count), count, acc, tmp, scratch!, threads);
          else mergeChunk(t.dtype, base, deltas, w, out!, count, acc, tmp, threads);
        }
        if (sink) await sink(at, out!); // a sink has neither parts nor float32 arrays: out is its scratch
      }
    }
  } finally {
    maps.close(); // no view outlives the merge
  }
}

/** The weighting's vectors in the pool, as (index in the weighting, pool entry), in pool order. */
function resolveVectors(pool: Pool, weighting: TensorWeighting): { k: number; vector: VectorEntry }[] {
  const seen = new Set<string>();
  for (const name of weighting.vectors) {
    if (seen.has(name)) throw new OptimerError('BAD_ARGUMENT', `merge: vector '${name}' is weighted twice`);
    seen.add(name);
    pool.vector(name); // unknown vector → BAD_ARGUMENT naming the pool's
  }
  return pool.manifest.vectors.flatMap((vector) => {
    const k = weighting.vectors.indexOf(vector.name);
    return k < 0 ? [] : [{ k, vector }];
  });
}

/** The vectors with a non-zero weight on `t`, in pool order, and their weights. */
function activeOn(
  t: TensorEntry,
  weighting: TensorWeighting,
  vectors: readonly { k: number; vector: VectorEntry }[],
): { active: VectorEntry[]; w: number[] } {
  const ws = weighting.weightsFor(t);
  if (ws.length !== weighting.vectors.length)
    throw new RangeError(`merge: ${ws.length} weights for tensor '${t.name}', expected one per vector (${weighting.vectors.length})`);
  const active: VectorEntry[] = [];
  const w: number[] = [];
  for (const { k, vector } of vectors) {
    const x = ws[k]!;
    if (!Number.isFinite(x))
      throw new OptimerError('BAD_ARGUMENT', `merge: weight of '${vector.name}' on tensor '${t.name}' is ${x}, not a finite number`);
    if (x !== 0) {
      active.push(vector);
      w.push(x);
    }
  }
  return { active, w };
}

/** Streams the merged weights chunk by chunk to `sink` (offsets in the layout). */
export function mergeWeights(pool: Pool, weighting: TensorWeighting, sink: MergeSink): Promise<void> {
  return merge(pool, weighting, { sink }, undefined);
}

/**
 * Merges into `dest` (reused across trials to avoid page faults): one buffer per part of the
 * layout, each at least the part's size. Returns the parts, each cut to its size. `threads`: native
 * threads per chunk (chunks of a million elements split when the kernels are built).
 */
export async function mergeInto(
  pool: Pool,
  weighting: TensorWeighting,
  dest: readonly Uint8Array[],
  signal?: AbortSignal,
  threads = 1,
): Promise<MergedWeights> {
  const parts = weightParts(pool.manifest);
  if (dest.length < parts.length || parts.some((p, i) => dest[i]!.length < p.bytes || dest[i]!.byteOffset % 8 !== 0))
    throw new RangeError(
      `mergeInto: need ${parts.length} destination buffers of [${parts.map((p) => p.bytes).join(', ')}] bytes, 8-byte aligned`,
    );
  await merge(pool, weighting, { parts: dest }, signal, threads);
  return parts.map((p, i) => dest[i]!.subarray(0, p.bytes));
}

/** Dtypes a merge can widen to float32 (float64 tensors cannot be fed as float32). */
const WIDENABLE = new Set(['float32', 'float16', 'bfloat16']);

/** Whether every merged tensor of the pool can be merged into float32 arrays (allocateWidened). */
export function canWiden(pool: Pool): boolean {
  return pool.manifest.tensors.every((t) => t.offset === null || WIDENABLE.has(t.dtype));
}

/** One float32 array per merged tensor of the pool (its elements, whatever its dtype). */
export function allocateWidened(pool: Pool): Map<string, Float32Array> {
  return new Map(
    pool.manifest.tensors.flatMap((t) => (t.offset === null ? [] : [[t.name, new Float32Array(t.bytes / dtypeBytes(t.dtype))]])),
  );
}

/**
 * Merges into float32 arrays, one per merged tensor (allocateWidened; reused across trials), each
 * element rounded to its tensor's dtype and widened: what a 16-bit merge holds, as float32.
 */
export async function mergeIntoWidened(
  pool: Pool,
  weighting: TensorWeighting,
  dest: WidenedWeights,
  signal?: AbortSignal,
  threads = 1,
): Promise<WidenedWeights> {
  for (const t of pool.manifest.tensors) {
    if (t.offset === null) continue;
    if (!WIDENABLE.has(t.dtype))
      throw new RangeError(`mergeIntoWidened: tensor '${t.name}' is ${t.dtype}, which cannot be widened to float32`);
    const n = t.bytes / dtypeBytes(t.dtype);
    if ((dest.get(t.name)?.length ?? -1) !== n)
      throw new RangeError(`mergeIntoWidened: tensor '${t.name}' needs a Float32Array of ${n} elements`);
  }
  await merge(pool, weighting, { widened: dest }, signal, threads);
  return dest;
}

/** Buffers for the merged weights, one per part of the pool's layout. */
export function allocateMerged(pool: Pool): MergedWeights {
  return weightParts(pool.manifest).map((p) => new Uint8Array(p.bytes));
}

/** The merged weights as new buffers, one per part of the pool's external-data layout. */
export function mergeToBuffer(pool: Pool, weighting: TensorWeighting): Promise<MergedWeights> {
  return mergeInto(pool, weighting, allocateMerged(pool));
}
