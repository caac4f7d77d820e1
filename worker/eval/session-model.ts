import type ort from 'onnxruntime-node';
import { DEFAULT_BATCH_TOKENS, type LanguageModel, type ModelIo, OptimerError } from '../../shared/index.js';
import { buildFeeds } from './feeds.js';

/** What the model is fed (the pool manifest's `model`): see feeds.ts. */
export type LmIo = ModelIo;

/**
 * A causal LM in an ONNX Runtime session, as metrics see it. Sequences are sorted by length
 * (longest first) and packed into right-padded batches of at most `batchTokens` tokens (batch ×
 * padded length; a causal LM never looks right, and the mask hides the padding); log-probs come
 * back per sequence in the caller's order, so no score depends on the batching.
 */
export class SessionModel implements LanguageModel {
  constructor(
    private readonly session: ort.InferenceSession,
    private readonly io: LmIo,
    private readonly batchTokens = DEFAULT_BATCH_TOKENS,
    private readonly onBatch?: (done: number) => void,
    /** aborting stops before the next batch (a closing worker does not finish a result it drops) */
    private readonly signal?: AbortSignal,
  ) {}

  async tokenLogProbs(seqs: readonly Int32Array[]): Promise<Float64Array[]> {
    const out = new Array<Float64Array>(seqs.length);
    const order = seqs.map((_, i) => i).sort((a, b) => seqs[b]!.length - seqs[a]!.length || a - b);
    let done = 0;
    for (let at = 0; at < order.length; ) {
      this.signal?.throwIfAborted();
      const maxLen = seqs[order[at]!]!.length;
      const n = Math.max(1, Math.min(order.length - at, Math.floor(this.batchTokens / maxLen)));
      const batch = order.slice(at, at + n);
      await this.runBatch(seqs, batch, maxLen, out);
      at += n;
      done += n;
      this.onBatch?.(done);
    }
    return out;
  }

  private async runBatch(seqs: readonly Int32Array[], batch: number[], len: number, out: Float64Array[]): Promise<void> {
    const { session, io } = this;
    const B = batch.length;
    const rows = batch.map((s) => seqs[s]!);
    const feeds = buildFeeds(io, rows, len);
    let result: ort.InferenceSession.ReturnType;
    try {
      result = await session.run(feeds, [io.output]);
    } catch (e) {
      // out of memory on a shared GPU, for one: another attempt (maybe elsewhere) may succeed
      throw new OptimerError('RUNTIME', `ONNX Runtime failed on a batch of ${B}×${len}: ${(e as Error).message}`, {
        cause: e,
        retryable: true,
      });
    }
    const logits = result[io.output]!;
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
      const lp = new Float64Array(seq.length - 1);
      for (let t = 1; t < seq.length; t++) {
        const y = seq[t]!;
        if (y >= V) throw new OptimerError('BAD_EVAL_SET', `token id ${y} is not below the model's vocabulary size ${V}`);
        const off = (b * len + t - 1) * V;
        let max = -Infinity;
        for (let v = 0; v < V; v++) if (data[off + v]! > max) max = data[off + v]!;
        let z = 0;
        for (let v = 0; v < V; v++) z += Math.exp(data[off + v]! - max);
        // negated as a whole, so that −lp is bit for bit the NLL term log z + max − logit
        lp[t - 1] = -(Math.log(z) + max - data[off + y]!);
      }
      out[s] = lp;
    });
    for (const t of Object.values(result)) t.dispose?.();
  }
}
