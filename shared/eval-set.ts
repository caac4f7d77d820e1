import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { OptimerError } from './errors.js';

/** Limits an evaluation set must respect, from the pool's model. */
export interface SequenceLimits {
  vocab: number | null;
  contextLength: number | null;
}

/**
 * Reads a JSONL evaluation set: one {"input_ids": [...]} per line, token ids in [0, vocab),
 * 2 to contextLength tokens. Blank lines are skipped; anything else wrong is refused with the
 * file and line number.
 */
export async function readEvalSet(path: string, limits: SequenceLimits): Promise<Int32Array[]> {
  const seqs: Int32Array[] = [];
  const stream = createReadStream(path, { encoding: 'utf8' });
  const opened = new Promise<void>((resolve, reject) => {
    stream.once('open', () => resolve());
    stream.once('error', reject);
  });
  try {
    await opened;
  } catch (e) {
    throw new OptimerError('BAD_EVAL_SET', `${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, {
      cause: e,
    });
  }
  const lines = createInterface({ input: stream, crlfDelay: Infinity });
  let lineNo = 0;
  try {
    for await (const line of lines) {
      lineNo++;
      if (line.trim() === '') continue;
      seqs.push(parseLine(line, `${path}:${lineNo}`, limits));
    }
  } finally {
    lines.close();
    stream.destroy();
  }
  if (seqs.length === 0) throw new OptimerError('BAD_EVAL_SET', `${path}: no sequences`);
  return seqs;
}

function parseLine(line: string, where: string, limits: SequenceLimits): Int32Array {
  const bad = (msg: string): never => {
    throw new OptimerError('BAD_EVAL_SET', `${where}: ${msg}`);
  };
  let obj: unknown;
  try {
    obj = JSON.parse(line);
  } catch (e) {
    return bad(`not valid JSON (${(e as Error).message})`);
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) return bad('expected an object {"input_ids": [...]}');
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

export interface EvalSetSpec {
  name: string;
  path: string;
  /** weight of this set in the objective (default 1) */
  weight?: number;
}

export interface LoadedEvalSet {
  name: string;
  path: string;
  weight: number;
  seqs: Int32Array[];
}

/** Reads and checks a list of sets: names unique, weights finite and ≥ 0, at least one above 0. */
export async function loadEvalSets(specs: EvalSetSpec[], limits: SequenceLimits): Promise<LoadedEvalSet[]> {
  if (specs.length === 0) throw new OptimerError('BAD_ARGUMENT', 'give at least one evaluation set (--set NAME=PATH)');
  const names = new Set<string>();
  const out: LoadedEvalSet[] = [];
  for (const s of specs) {
    if (names.has(s.name)) throw new OptimerError('BAD_ARGUMENT', `evaluation set '${s.name}' is given twice`);
    names.add(s.name);
    const weight = s.weight ?? 1;
    if (!Number.isFinite(weight) || weight < 0)
      throw new OptimerError('BAD_ARGUMENT', `evaluation set '${s.name}': weight ${weight} must be a finite number ≥ 0`);
    out.push({ name: s.name, path: s.path, weight, seqs: await readEvalSet(s.path, limits) });
  }
  if (out.every((s) => s.weight === 0)) throw new OptimerError('BAD_ARGUMENT', 'at least one evaluation set needs a weight above 0');
  return out;
}
