import ort from 'onnxruntime-node';
import { DEFAULT_BATCH_TOKENS, OptimerError } from '../../shared/index.js';

export interface LmIo {
  input: string;
  output: string;
  attentionMask: string | null;
}

export interface NllResult {
  /** token-weighted mean next-token NLL, nats */
  nll: number;
  tokens: number;
  sequences: number;
}

/**
 * Metric `nll`: over all sequences s and positions t = 1..len(s)−1, the token-weighted mean of
 * −ln softmax(logits[s, t−1])[ids[s, t]]. Sequences are sorted by length and packed into
 * right-padded batches (a causal LM never looks right, and the mask hides the padding);
 * per-sequence sums are added in file order, so the result does not depend on the batching.
 */
export async function evaluateNll(
  session: ort.InferenceSession,
  seqs: Int32Array[],
  io: LmIo,
  batchTokens = DEFAULT_BATCH_TOKENS,
  onBatch?: (done: number) => void,
): Promise<NllResult> {
  const sums = new Float64Array(seqs.length);
  const order = seqs.map((_, i) => i).sort((a, b) => seqs[b]!.length - seqs[a]!.length || a - b);
  let done = 0;
  for (let at = 0; at < order.length; ) {
    const maxLen = seqs[order[at]!]!.length;
    const n = Math.max(1, Math.min(order.length - at, Math.floor(batchTokens / maxLen)));
    const batch = order.slice(at, at + n);
    await runBatch(session, seqs, batch, maxLen, io, sums);
    at += n;
    done += n;
    onBatch?.(done);
  }
  let total = 0;
  let tokens = 0;
  for (let i = 0; i < seqs.length; i++) {
    total += sums[i]!;
    tokens += seqs[i]!.length - 1;
  }
  return { nll: total / tokens, tokens, sequences: seqs.length };
}

async function runBatch(
  session: ort.InferenceSession,
  seqs: Int32Array[],
  batch: number[],
  len: number,
  io: LmIo,
  sums: Float64Array,
): Promise<void> {
  const B = batch.length;
  const ids = new BigInt64Array(B * len);
  const mask = io.attentionMask ? new BigInt64Array(B * len) : undefined;
  batch.forEach((s, b) => {
    const seq = seqs[s]!;
    for (let t = 0; t < seq.length; t++) {
      ids[b * len + t] = BigInt(seq[t]!);
      if (mask) mask[b * len + t] = 1n;
    }
  });
  const feeds: Record<string, ort.Tensor> = { [io.input]: new ort.Tensor('int64', ids, [B, len]) };
  if (mask && io.attentionMask) feeds[io.attentionMask] = new ort.Tensor('int64', mask, [B, len]);
  let out: ort.InferenceSession.ReturnType;
  try {
    out = await session.run(feeds, [io.output]);
  } catch (e) {
    // out of memory on a shared GPU, for one: another attempt (maybe elsewhere) may succeed
    throw new OptimerError('RUNTIME', `ONNX Runtime failed on a batch of ${B}×${len}: ${(e as Error).message}`, {
      cause: e,
      retryable: true,
    });
  }
  const logits = out[io.output]!;
  const dims = logits.dims;
  if (logits.type !== 'float32' || dims.length !== 3 || dims[0] !== B || dims[1] !== len) {
    throw new OptimerError(
      'RUNTIME',
      `output '${io.output}' is ${logits.type} [${dims.join(', ')}], expected float32 [${B}, ${len}, vocab]`,
    );
  }
  const V = dims[2]!;
  const data = logits.data as Float32Array;
  batch.forEach((s, b) => {
    const seq = seqs[s]!;
    let sum = 0;
    for (let t = 1; t < seq.length; t++) {
      const y = seq[t]!;
      if (y >= V) throw new OptimerError('BAD_EVAL_SET', `token id ${y} is not below the model's vocabulary size ${V}`);
      const off = (b * len + t - 1) * V;
      let max = -Infinity;
      for (let v = 0; v < V; v++) if (data[off + v]! > max) max = data[off + v]!;
      let z = 0;
      for (let v = 0; v < V; v++) z += Math.exp(data[off + v]! - max);
      sum += Math.log(z) + max - data[off + y]!;
    }
    sums[s] = sum;
  });
  for (const t of Object.values(out)) t.dispose?.();
}
