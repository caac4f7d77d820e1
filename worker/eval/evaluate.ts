import type ort from 'onnxruntime-node';
import {
  DEFAULT_BATCH_TOKENS,
  type ExecutionProvider,
  type LoadedEvalSet,
  type Pool,
  type TensorWeighting,
  weightedMean,
} from '../../shared/index.js';
import { mergeToBuffer } from '../merge/merge.js';
import { evaluateNll, type LmIo } from './nll.js';
import { createMergedSession } from './session.js';

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

/** Scores one session (a merge or a model file) on every set. */
export async function evaluateSession(
  session: ort.InferenceSession,
  sets: LoadedEvalSet[],
  io: LmIo,
  batchTokens = DEFAULT_BATCH_TOKENS,
): Promise<SetScore[]> {
  const scores: SetScore[] = [];
  for (const s of sets) {
    const r = await evaluateNll(session, s.seqs, io, batchTokens);
    scores.push({ name: s.name, metric: 'nll', score: r.nll, weight: s.weight, tokens: r.tokens, sequences: r.sequences });
  }
  return scores;
}

/** Merges θ from the pool as `weighting` says and evaluates it on every set. */
export async function evaluateMerge(
  pool: Pool,
  weighting: TensorWeighting,
  sets: LoadedEvalSet[],
  options: EvalOptions = {},
): Promise<EvalReport> {
  const t0 = performance.now();
  const merged = await mergeToBuffer(pool, weighting);
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
