import type ort from 'onnxruntime-node';
import {
  DEFAULT_BATCH_TOKENS,
  type ExecutionProvider,
  type LanguageModel,
  type LoadedEvalSet,
  METRICS,
  type MetricName,
  type MetricResult,
  type Pool,
  type TensorWeighting,
  weightedMean,
} from '../../shared/index.js';
import { allocateMerged, mergeInto } from '../merge/merge.js';
import { type LmIo, SessionModel } from './session-model.js';
import { createMergedSession } from './session.js';
import { ProviderGraphs } from './widen.js';

export interface SetScore {
  name: string;
  /** the set's metric */
  metric: MetricName;
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
  /** threads of the native merge and ONNX Runtime's intra-op threads (default: 1 and ONNX Runtime's own) */
  threads?: number;
}

/** Scores one session (a merge or a model file) on every set, each with its own metric. */
export async function evaluateSession(
  session: ort.InferenceSession,
  sets: LoadedEvalSet[],
  io: LmIo,
  batchTokens = DEFAULT_BATCH_TOKENS,
  signal?: AbortSignal,
): Promise<SetScore[]> {
  const model = new SessionModel(session, io, batchTokens, undefined, signal);
  const scores: SetScore[] = [];
  for (const s of sets) {
    const r = await scoreSet(model, s);
    scores.push({ name: s.name, metric: s.metric, score: r.score, weight: s.weight, tokens: r.tokens, sequences: r.sequences });
  }
  return scores;
}

/** The set's own metric over its items (generic in the metric, so items and metric agree). */
function scoreSet<N extends MetricName>(model: LanguageModel, set: LoadedEvalSet<N>): Promise<MetricResult> {
  return METRICS[set.metric].evaluate(model, set.items);
}

export interface NllResult {
  /** token-weighted mean next-token NLL, nats */
  nll: number;
  tokens: number;
  sequences: number;
}

/** The `nll` metric of sequences under a session. */
export async function evaluateNll(
  session: ort.InferenceSession,
  seqs: Int32Array[],
  io: LmIo,
  batchTokens = DEFAULT_BATCH_TOKENS,
  onBatch?: (done: number) => void,
): Promise<NllResult> {
  const r = await METRICS.nll.evaluate(new SessionModel(session, io, batchTokens, onBatch), seqs);
  return { nll: r.score, tokens: r.tokens, sequences: r.sequences };
}

/** Merges θ from the pool as `weighting` says and evaluates it on every set. */
export async function evaluateMerge(
  pool: Pool,
  weighting: TensorWeighting,
  sets: LoadedEvalSet[],
  options: EvalOptions = {},
): Promise<EvalReport> {
  const t0 = performance.now();
  const merged = await mergeInto(pool, weighting, allocateMerged(pool), undefined, options.threads);
  const t1 = performance.now();
  const provider = options.provider ?? 'cpu';
  const { graph, io } = new ProviderGraphs(await pool.graphBytes(), pool.manifest.model, `${pool.label}: graph`).for(provider);
  const session = await createMergedSession(graph, merged, provider, options.threads);
  const t2 = performance.now();
  try {
    const scores = await evaluateSession(session, sets, io, options.batchTokens);
    const t3 = performance.now();
    return { scores, mean: weightedMean(scores), timings: { mergeMs: t1 - t0, sessionMs: t2 - t1, evalMs: t3 - t2 } };
  } finally {
    await session.release();
  }
}
