import { OptimerError } from '../errors.js';
import type { TextTokenizer } from '../tokenizer.js';
import type { SequenceLimits, TextLine } from './metric.js';

export const TEXT_LINE_FORMAT = '{"text": "..."}';

/** `obj.text` as a TextLine if it is a non-empty string; undefined if `obj` has no "text". */
export function textLineOf(obj: Record<string, unknown>, where: string): TextLine | undefined {
  if (!Object.hasOwn(obj, 'text')) return undefined;
  const text = obj.text;
  if (typeof text !== 'string' || text.length === 0) throw new OptimerError('BAD_EVAL_SET', `${where}: "text" must be a non-empty string`);
  return { text, where };
}

/**
 * Cuts a sequence into windows of at most `contextLength` tokens, each starting on the last
 * token of the one before: every token but the first is predicted exactly once, in the window
 * that ends with it, from at least one token of context (lm-evaluation-harness's rolling
 * windows with a context of 1, less its extra context for the last window). A sequence that
 * fits is its own single window.
 */
export function contextWindows(ids: Int32Array, contextLength: number | null): Int32Array[] {
  const L = contextLength ?? ids.length;
  if (ids.length <= L) return [ids];
  if (L < 2) throw new OptimerError('BAD_ARGUMENT', `a context length of ${L} leaves nothing to predict`);
  const out: Int32Array[] = [];
  for (let start = 0; start < ids.length - 1; start += L - 1) out.push(ids.subarray(start, Math.min(start + L, ids.length)));
  return out;
}

/** A text tokenised and cut into windows of the model's context; refused if under 2 tokens or outside the vocabulary. */
export function tokeniseText(line: TextLine, tokenizer: TextTokenizer, limits: SequenceLimits): Int32Array[] {
  const ids = tokenizer.encode(line.text, line.where);
  if (ids.length < 2)
    throw new OptimerError('BAD_EVAL_SET', `${line.where}: the text is ${ids.length} token(s) long: at least 2 are needed to score one`);
  if (limits.vocab !== null) {
    for (const id of ids) {
      if (id >= limits.vocab)
        throw new OptimerError(
          'BAD_EVAL_SET',
          `${line.where}: the tokenizer gave token id ${id}, not below the model's vocabulary size ${limits.vocab}`,
        );
    }
  }
  return contextWindows(ids, limits.contextLength);
}

/** UTF-8 bytes of a string. */
export function utf8Bytes(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}
