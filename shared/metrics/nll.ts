import { OptimerError } from '../errors.js';
import type { LanguageModel, Metric, MetricResult, PrepareContext, SequenceLimits, TextLine } from './metric.js';
import { TEXT_LINE_FORMAT, textLineOf, tokeniseText } from './text.js';

const IDS_LINE_FORMAT = '{"input_ids": [...]}';
const LINE_FORMAT = `${IDS_LINE_FORMAT} or ${TEXT_LINE_FORMAT}`;

/**
 * `nll`: over all sequences s and positions t = 1..len(s)−1, the token-weighted mean of
 * −ln p(ids[s, t] | ids[s, <t]), in nats. Lines are {"input_ids": [...]}: token ids in
 * [0, vocab), 2 to contextLength tokens; or {"text": "..."}: tokenised with the pool's tokenizer and
 * cut into windows of the model's context (contextWindows: every token but the first scored
 * once). Per-sequence sums are added in file order, so the score does not depend on how the
 * model batches.
 */
export const nllMetric: Metric<Int32Array, 'nll', Int32Array | TextLine> = {
  name: 'nll',
  description: 'token-weighted mean next-token negative log-likelihood, in nats',
  lineFormat: LINE_FORMAT,
  direction: 'minimize',
  parseLine: parseSequence,
  prepare: prepareSequences,
  evaluate: evaluateNll,
};

/** Token ids as they are; texts tokenised and windowed (the tokenizer loaded only if a text is there). */
async function prepareSequences(lines: (Int32Array | TextLine)[], ctx: PrepareContext): Promise<Int32Array[]> {
  if (lines.every((l) => l instanceof Int32Array)) return lines as Int32Array[];
  const tokenizer = await ctx.tokenizer();
  return lines.flatMap((l) => (l instanceof Int32Array ? [l] : tokeniseText(l, tokenizer, ctx.limits)));
}

function parseSequence(obj: unknown, where: string, limits: SequenceLimits): Int32Array | TextLine {
  const bad = (msg: string): never => {
    throw new OptimerError('BAD_EVAL_SET', `${where}: ${msg}`);
  };
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) return bad(`expected an object ${LINE_FORMAT}`);
  const text = textLineOf(obj as Record<string, unknown>, where);
  if (text) return text;
  const ids = (obj as Record<string, unknown>).input_ids;
  if (!Array.isArray(ids)) return bad('"input_ids" must be an array of token ids');
  if (ids.length < 2) bad(`a sequence needs at least 2 tokens, this one has ${ids.length}`);
  if (limits.contextLength !== null && ids.length > limits.contextLength) {
    bad(`${ids.length} tokens exceed the model's context length of ${limits.contextLength}`);
  }
  const out = new Int32Array(ids.length);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0)
      bad(`input_ids[${i}] = ${JSON.stringify(id)} is not a token id (a non-negative integer)`);
    if (limits.vocab !== null && (id as number) >= limits.vocab)
      bad(`input_ids[${i}] = ${id} is not below the vocabulary size ${limits.vocab}`);
    out[i] = id as number;
  }
  return out;
}

async function evaluateNll(model: LanguageModel, seqs: readonly Int32Array[]): Promise<MetricResult> {
  const logProbs = await model.tokenLogProbs(seqs);
  if (logProbs.length !== seqs.length)
    throw new OptimerError('RUNTIME', `the model scored ${logProbs.length} sequences, expected ${seqs.length}`);
  let total = 0;
  let tokens = 0;
  for (let i = 0; i < seqs.length; i++) {
    const lp = logProbs[i]!;
    if (lp.length !== seqs[i]!.length - 1)
      throw new OptimerError(
        'RUNTIME',
        `the model scored ${lp.length} tokens of a ${seqs[i]!.length}-token sequence, expected ${seqs[i]!.length - 1}`,
      );
    // the sequence's sum first, then the total in file order: the same float64 additions
    // whatever the batching
    let sum = 0;
    for (let t = 0; t < lp.length; t++) sum -= lp[t]!;
    total += sum;
    tokens += lp.length;
  }
  return { score: total / tokens, tokens, sequences: seqs.length };
}
