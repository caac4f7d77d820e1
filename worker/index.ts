// Public entry of the worker side: the merge kernel, exports and evaluators.
export { mergeWeights, mergeInto, mergeToBuffer, type MergeSink } from './merge/merge.js';
export { exportOnnx, exportMergekit, INLINE_LIMIT_BYTES, type MergekitOptions } from './merge/export.js';
export { evaluateNll, DEFAULT_BATCH_TOKENS, type LmIo, type NllResult } from './eval/nll.js';
export { createMergedSession, createFileSession, EXECUTION_PROVIDERS, type ExecutionProvider } from './eval/session.js';
export {
  evaluateMerge,
  evaluateSession,
  loadEvalSets,
  weightedMean,
  type EvalSetSpec,
  type LoadedEvalSet,
  type SetScore,
  type EvalReport,
  type EvalOptions,
} from './eval/evaluate.js';
export { Worker, type WorkerOptions } from './worker.js';
export { BlobCache } from './shards/fetch.js';
