import ort from 'onnxruntime-node';
import { DEFAULT_BATCH_TOKENS, type LanguageModel, type ModelIo, OptimerError } from '../../shared/index.js';
import { buildFeeds } from './feeds.js';
import { LOGPROBS_OUTPUT, TARGETS_INPUT } from './loss-graph.js';

/**
 * What the model is fed (the pool manifest's `model`: see feeds.ts), and its vocabulary when
 * known: token ids are checked against it before a batch runs (GatherElements and the
 * embedding's Gather would fail on them inside ONNX Runtime).
 */
export type LmIo = ModelIo & {
  vocab?: number | null;
  /** the context length when the pool knows it (then too-long lines are refused at load) */
  contextLength?: number | null;
};

/**
 * A causal LM in an ONNX Runtime session of its loss graph (toLossGraph), as metrics see it.
 * Sequences are sorted by length (longest first) and packed into right-padded batches of at most
 * `batchTokens` tokens (batch × padded length; a causal LM never looks right, and the mask hides
 * the padding); the graph returns ln p(next token) per position, [batch, length] float32, so the
 * logits never leave the runtime. Log-probs come back per sequence in the caller's order, so no
 * score depends on the batching.
 */
export class SessionModel implements LanguageModel {
  constructor(
    private readonly session: ort.InferenceSession,
    private readonly io: LmIo,
    private readonly batchTokens = DEFAULT_BATCH_TOKENS,
    private readonly onBatch?: (done: number) => void,
    /** aborting stops before the next batch (a closing worker does not finish a result it drops) */
    private readonly signal?: AbortSignal,
    /** fed with every batch: the merged weights, when the session takes them as inputs (TrialSessions) */
    private readonly weights?: Readonly<Record<string, ort.Tensor>>,
  ) {
    if (!session.outputNames.includes(LOGPROBS_OUTPUT) || !session.inputNames.includes(TARGETS_INPUT)) {
      throw new OptimerError(
        'BAD_ARGUMENT',
        `the session has no '${LOGPROBS_OUTPUT}' output (outputs: ${session.outputNames.join(', ')}): ` +
          'create it with createMergedSession or createFileSession, which append the per-token loss to the graph',
      );
    }
  }

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
    const vocab = io.vocab ?? null;
    const rows = batch.map((s) => seqs[s]!);
    // the next token at each position; the last position and the padding stay 0 and are not read
    const targets = new BigInt64Array(B * len);
    rows.forEach((seq, b) => {
      for (let t = 0; t < seq.length; t++) {
        const y = seq[t]!;
        if (vocab !== null && y >= vocab) throw outsideVocab(y, vocab);
        if (t > 0) targets[b * len + t - 1] = BigInt(y);
      }
    });
    const feeds = { ...this.weights, ...buildFeeds(io, rows, len) };
    feeds[TARGETS_INPUT] = new ort.Tensor('int64', targets, [B, len]);
    let result: ort.InferenceSession.ReturnType;
    try {
      // ONNX Runtime's own log of a failed run (a C++ error line per attempt) says no more than
      // the error below, which names the batch: keep it off the user's terminal
      result = await session.run(feeds, [LOGPROBS_OUTPUT], { logSeverityLevel: 4 });
    } catch (e) {
      // out of memory on a shared GPU, for one: another attempt (maybe elsewhere) may succeed.
      // With no known context length nothing checked the lengths at load: say that a sequence
      // longer than the model's context is a likely cause, and how to make it checked
      const unchecked =
        (io.contextLength ?? null) === null
          ? `; the pool does not record the model's context length, so no sequence was checked against it: ` +
            `if the model takes fewer than ${len} tokens, a ${len}-token sequence is the cause ` +
            "(rebuild the pool with 'optimer pool build --context-length N' to have longer lines refused when a set is read)"
          : '';
      throw new OptimerError(
        'RUNTIME',
        `ONNX Runtime failed on a batch of ${B} sequence${B === 1 ? '' : 's'} of up to ${len} tokens: ${(e as Error).message.trim()}${unchecked}`,
        { cause: e, retryable: true },
      );
    }
    try {
      const lps = result[LOGPROBS_OUTPUT]!;
      const dims = lps.dims;
      if (lps.type !== 'float32' || dims.length !== 2 || dims[0] !== B || dims[1] !== len) {
        throw new OptimerError(
          'RUNTIME',
          `output '${LOGPROBS_OUTPUT}' is ${lps.type} [${dims.join(', ')}], expected float32 [${B}, ${len}]`,
        );
      }
      const data = lps.data as Float32Array;
      batch.forEach((s, b) => {
        const seq = seqs[s]!;
        const lp = new Float64Array(seq.length - 1);
        for (let t = 1; t < seq.length; t++) {
          lp[t - 1] = data[b * len + t - 1]!;
        }
        out[s] = lp;
      });
    } finally {
      for (const t of Object.values(result)) t.dispose?.();
    }
  }
}

function outsideVocab(id: number, vocab: number): OptimerError {
  return new OptimerError('BAD_EVAL_SET', `token id ${id} is not below the model's vocabulary size ${vocab}`);
}
