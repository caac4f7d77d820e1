import ort from 'onnxruntime-node';
import type { ModelIo } from '../../shared/index.js';

/**
 * The ONNX Runtime feeds for one right-padded batch of `rows` (B sequences, padded to `len`), as
 * the pool's model description says (found in the graph at pool build):
 *  - the token ids, int64 or int32 [B, len], 0 on padding;
 *  - `attention_mask` [B, len]: 1 on tokens, 0 on padding;
 *  - `position_ids` [B, len]: 0..length−1 on each row's tokens, 0 on padding;
 *  - each `past_key_values.{i}.key|value`: empty, [B, heads, 0, head_dim] (a full sequence is
 *    scored with past length 0), float32 or float16;
 *  - `use_cache_branch`: false, [1] (a merged decoder takes its branch without a cache).
 */
export function buildFeeds(io: ModelIo, rows: readonly Int32Array[], len: number): Record<string, ort.Tensor> {
  const B = rows.length;
  const feeds: Record<string, ort.Tensor> = { [io.input]: idTensor(io.inputType ?? 'int64', rows, len, (seq, t) => seq[t]!) };
  if (io.attentionMask) feeds[io.attentionMask] = idTensor(io.attentionMaskType ?? 'int64', rows, len, () => 1);
  if (io.positionIds) feeds[io.positionIds.name] = idTensor(io.positionIds.type, rows, len, (_, t) => t);
  for (const p of io.past ?? []) {
    // a bfloat16 past reaches here only through a graph that takes it as float32 (eval/widen.ts)
    if (p.type === 'bfloat16') throw new Error(`buildFeeds: past input '${p.name}' is bfloat16; feed the graph ProviderGraphs made`);
    const data = p.type === 'float16' ? new Uint16Array(0) : new Float32Array(0);
    feeds[p.name] = new ort.Tensor(p.type, data, [B, p.heads, 0, p.headDim]);
  }
  if (io.useCacheBranch) feeds[io.useCacheBranch] = new ort.Tensor('bool', new Uint8Array([0]), [1]);
  return feeds;
}

/** A [B, len] integer tensor: `value(seq, t)` on each row's tokens, 0 on padding. */
function idTensor(
  type: 'int64' | 'int32',
  rows: readonly Int32Array[],
  len: number,
  value: (seq: Int32Array, t: number) => number,
): ort.Tensor {
  const dims = [rows.length, len];
  if (type === 'int32') {
    const a = new Int32Array(rows.length * len);
    rows.forEach((seq, b) => {
      for (let t = 0; t < seq.length; t++) a[b * len + t] = value(seq, t);
    });
    return new ort.Tensor('int32', a, dims);
  }
  const a = new BigInt64Array(rows.length * len);
  rows.forEach((seq, b) => {
    for (let t = 0; t < seq.length; t++) a[b * len + t] = BigInt(value(seq, t));
  });
  return new ort.Tensor('int64', a, dims);
}
