import { OptimerError } from '../errors.js';
import type { LanguageModel, Metric, MetricResult, PrepareContext, SequenceLimits, TextLine } from './metric.js';
import { TEXT_LINE_FORMAT, textLineOf, tokeniseText, utf8Bytes } from './text.js';

/** A text ready to score: its token windows and its length in UTF-8 bytes. */
export interface BpbText {
  windows: Int32Array[];
  bytes: number;
}

/**
 * `bpb`, bits per byte: Σ −ln p over every scored token of every text / (ln 2 · Σ UTF-8 bytes of
 * the texts), as lm-evaluation-harness reports it: the tokenizer is in the numerator only, so
 * models with different tokenizers compare. Lines are {"text": "..."}, tokenised with the pool's
 * tokenizer and cut into windows of the model's context (contextWindows). Sums are per text,
 * then in file order, so the score does not depend on how the model batches.
 */
export const bpbMetric: Metric<BpbText, 'bpb', TextLine> = {
  name: 'bpb',
  description: "bits per UTF-8 byte of the texts (tokenizer-independent), from the model's next-token NLL",
  lineFormat: TEXT_LINE_FORMAT,
  direction: 'minimize',
  parseLine: parseText,
  prepare: prepareTexts,
  evaluate: evaluateBpb,
};

function parseText(obj: unknown, where: string, _limits: SequenceLimits): TextLine {
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj))
    throw new OptimerError('BAD_EVAL_SET', `${where}: expected an object ${TEXT_LINE_FORMAT}`);
  const line = textLineOf(obj as Record<string, unknown>, where);
  if (!line)
    throw new OptimerError('BAD_EVAL_SET', `${where}: bpb needs ${TEXT_LINE_FORMAT} lines (bytes per token are unknown for token ids)`);
  return line;
}

async function prepareTexts(lines: TextLine[], ctx: PrepareContext): Promise<BpbText[]> {
  const tokenizer = await ctx.tokenizer();
  return lines.map((l) => ({ windows: tokeniseText(l, tokenizer, ctx.limits), bytes: utf8Bytes(l.text) }));
}

async function evaluateBpb(model: LanguageModel, texts: readonly BpbText[]): Promise<MetricResult> {
  const seqs = texts.flatMap((t) => t.windows);
  const logProbs = await model.tokenLogProbs(seqs);
  if (logProbs.length !== seqs.length)
    throw new OptimerError('RUNTIME', `the model scored ${logProbs.length} sequences, expected ${seqs.length}`);
  let nats = 0;
  let tokens = 0;
  let bytes = 0;
  let at = 0;
  for (const t of texts) {
    let sum = 0;
    for (const w of t.windows) {
      const lp = logProbs[at++]!;
      if (lp.length !== w.length - 1)
        throw new OptimerError('RUNTIME', `the model scored ${lp.length} tokens of a ${w.length}-token window, expected ${w.length - 1}`);
      for (let i = 0; i < lp.length; i++) sum -= lp[i]!;
      tokens += lp.length;
    }
    nats += sum;
    bytes += t.bytes;
  }
  return { score: nats / (Math.LN2 * bytes), tokens, sequences: texts.length };
}
