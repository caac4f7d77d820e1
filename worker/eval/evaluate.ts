import type ort from 'onnxruntime-node';
import { OptimerError } from '../../shared/errors.js';
import { readEvalSet, type SequenceLimits } from '../../shared/eval-set.js';
import type { Pool } from '../../shared/pool/reader.js';
import type { MergeWeights } from '../../shared/weights.js';
import { mergeToBuffer } from '../merge/merge.js';
import { evaluateNll, DEFAULT_BATCH_TOKENS, type LmIo } from './nll.js';
import { createMergedSession, type ExecutionProvider } from './session.js';

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

export interface SetScore {
  name: string;
  metric: 'nll';
  score: number;
  weight: number;
  tokens: number;
  sequences: number;
}

export interface EvalReport {
  scores: SetScore[];
  /** Σ weight·score / Σ weight */
  mean: number;
  timings: { mergeMs: number; sessionMs: number; evalMs: number };
}

export interface EvalOptions {
  provider?: ExecutionProvider;
  batchTokens?: number;
}

export async function loadEvalSets(specs: EvalSetSpec[], limits: SequenceLimits): Promise<LoadedEvalSet[]> {
  if (specs.length === 0) throw new OptimerError('BAD_ARGUMENT', 'give at least one evaluation set (--set NAME=PATH)');
  const names = new Set<string>();
  const out: LoadedEvalSet[] = [];
  for (const s of specs) {
    if (names.has(s.name)) throw new OptimerError('BAD_ARGUMENT', `evaluation set '${s.name}' is given twice`);
    names.add(s.name);
    const weight = s.weight ?? 1;
    if (!Number.isFinite(weight) || weight < 0) throw new OptimerError('BAD_ARGUMENT', `evaluation set '${s.name}': weight ${weight} must be a finite number ≥ 0`);
    out.push({ name: s.name, path: s.path, weight, seqs: await readEvalSet(s.path, limits) });
  }
  if (out.every((s) => s.weight === 0)) throw new OptimerError('BAD_ARGUMENT', 'at least one evaluation set needs a weight above 0');
  return out;
}

export function weightedMean(scores: { score: number; weight: number }[]): number {
  let num = 0;
  let den = 0;
  for (const s of scores) {
    num += s.weight * s.score;
    den += s.weight;
  }
  return num / den;
}

/** Scores one session (a merge or a model file) on every set. */
export async function evaluateSession(session: ort.InferenceSession, sets: LoadedEvalSet[], io: LmIo, batchTokens = DEFAULT_BATCH_TOKENS): Promise<SetScore[]> {
  const scores: SetScore[] = [];
  for (const s of sets) {
    const r = await evaluateNll(session, s.seqs, io, batchTokens);
    scores.push({ name: s.name, metric: 'nll', score: r.nll, weight: s.weight, tokens: r.tokens, sequences: r.sequences });
  }
  return scores;
}

/** Merges θ(w) from the pool and evaluates it on every set. */
export async function evaluateMerge(pool: Pool, weights: MergeWeights, sets: LoadedEvalSet[], options: EvalOptions = {}): Promise<EvalReport> {
  const t0 = performance.now();
  const merged = await mergeToBuffer(pool, weights);
  const t1 = performance.now();
  const session = await createMergedSession(await pool.graphBytes(), merged, options.provider ?? 'cpu');
  const t2 = performance.now();
  try {
    const scores = await evaluateSession(session, sets, pool.manifest.model, options.batchTokens);
    const t3 = performance.now();
    return { scores, mean: weightedMean(scores), timings: { mergeMs: t1 - t0, sessionMs: t2 - t1, evalMs: t3 - t2 } };
  } finally {
    await session.release();
  }
}
