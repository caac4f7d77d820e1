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
  type WeightFeed,
} from '../../shared/index.js';
import { type LmIo, SessionModel } from './session-model.js';
import { TrialSessions } from './trial-session.js';
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
  /** how the merged weights reached ONNX Runtime (see TrialSessions) */
  weightFeed: WeightFeed;
  /** why they were not inputs, when inputs were asked for (a float64 pool, a graph ONNX Runtime refuses so) */
  weightFeedNote?: string;
}

export interface EvalOptions {
  provider?: ExecutionProvider;
  batchTokens?: number;
  /** threads of the native merge and ONNX Runtime's intra-op threads (default: 1 and ONNX Runtime's own) */
  threads?: number;
  /** on the CPU provider, how the merged weights reach ONNX Runtime (default: inputs; see TrialSessions) */
  weightFeed?: WeightFeed;
}

/** Scores one session (a merge or a model file) on every set, each with its own metric. */
export async function evaluateSession(
  session: ort.InferenceSession,
  sets: LoadedEvalSet[],
  io: LmIo,
  batchTokens = DEFAULT_BATCH_TOKENS,
  signal?: AbortSignal,
  /** the merged weights, when the session takes them as inputs (TrialSessions) */
  weights?: Readonly<Record<string, ort.Tensor>>,
): Promise<SetScore[]> {
  const model = new SessionModel(session, io, batchTokens, undefined, signal, weights);
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

/** Merges θ from the pool as `weighting` says and evaluates it on every set, as a worker does. */
export async function evaluateMerge(
  pool: Pool,
  weighting: TensorWeighting,
  sets: LoadedEvalSet[],
  options: EvalOptions = {},
): Promise<EvalReport> {
  const graphs = new ProviderGraphs(await pool.graphBytes(), pool.manifest.model, `${pool.label}: graph`);
  const sessions = new TrialSessions();
  try {
    const { value, timings, weightFeed, note } = await sessions.run(
      pool,
      graphs,
      weighting,
      {
        provider: options.provider ?? 'cpu',
        ...(options.weightFeed ? { weightFeed: options.weightFeed } : {}),
        mergeThreads: options.threads ?? 1,
        ...(options.threads ? { intraOpThreads: options.threads } : {}),
      },
      async ({ session, io, weights }) => {
        const t0 = performance.now();
        const scores = await evaluateSession(session, sets, io, options.batchTokens, undefined, weights);
        return { scores, evalMs: performance.now() - t0 };
      },
    );
    return {
      scores: value.scores,
      mean: weightedMean(value.scores),
      timings: { ...timings, evalMs: value.evalMs },
      weightFeed,
      ...(note ? { weightFeedNote: note } : {}),
    };
  } finally {
    await sessions.close();
  }
}
