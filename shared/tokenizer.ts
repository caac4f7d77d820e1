import { Tokenizer } from '@huggingface/tokenizers';
import { OptimerError } from './errors.js';

/**
 * A model's own tokenizer, from its Hugging Face `tokenizer.json`, through @huggingface/tokenizers
 * (pure JS, no native code, no network: the coordinator may load it as well as a worker).
 */
export interface TextTokenizer {
  /** the highest token id the tokenizer can produce (added tokens included) */
  readonly maxId: number;
  /**
   * The token ids of `text`, special tokens added as the tokenizer's post-processor says (a BOS
   * token, for one, as the model saw in training). Throws BAD_EVAL_SET (prefixed by `where`) if a
   * piece of the text has no id (no unknown token in the vocabulary).
   */
  encode(text: string, where: string): Int32Array;
}

/** Parses and checks a tokenizer.json (`where` names it in errors). */
export function parseTokenizer(json: string | Uint8Array, where: string): TextTokenizer {
  const text = typeof json === 'string' ? json : new TextDecoder().decode(json);
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw new OptimerError('BAD_ARGUMENT', `${where}: not valid JSON (${(e as Error).message})`, { cause: e });
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj) || typeof (obj as { model?: unknown }).model !== 'object') {
    throw new OptimerError('BAD_ARGUMENT', `${where}: not a Hugging Face tokenizer.json (no "model" object)`);
  }
  let tk: Tokenizer;
  try {
    tk = new Tokenizer(obj, {});
  } catch (e) {
    throw new OptimerError('BAD_ARGUMENT', `${where}: cannot load the tokenizer (${(e as Error).message})`, { cause: e });
  }
  let maxId = -1;
  for (const id of tk.get_vocab(true).values()) maxId = Math.max(maxId, id);
  if (maxId < 0) throw new OptimerError('BAD_ARGUMENT', `${where}: the tokenizer has an empty vocabulary`);
  return {
    maxId,
    encode(s: string, at: string): Int32Array {
      const { ids, tokens } = tk.encode(s);
      const out = new Int32Array(ids.length);
      for (let i = 0; i < ids.length; i++) {
        const id = ids[i];
        if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
          throw new OptimerError(
            'BAD_EVAL_SET',
            `${at}: the tokenizer has no id for ${JSON.stringify(tokens[i])} (and no unknown token to map it to)`,
          );
        }
        out[i] = id;
      }
      return out;
    },
  };
}
