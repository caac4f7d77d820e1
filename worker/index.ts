// The public entry of worker/: what cli/ may use.
export { mergeWeights, mergeInto, mergeToBuffer, allocateMerged, type MergeSink, type MergedWeights } from './merge/merge.js';
export { exportOnnx, exportMergekit, INLINE_LIMIT_BYTES, type MergekitOptions } from './merge/export.js';
export { SessionModel, type LmIo } from './eval/session-model.js';
export { buildFeeds } from './eval/feeds.js';
export { LossGraph, toLossGraph, LOGPROBS_OUTPUT, TARGETS_INPUT, type LossGraphOptions } from './eval/loss-graph.js';
export { createMergedSession, createFileSession } from './eval/session.js';
export {
  evaluateMerge,
  evaluateNll,
  evaluateSession,
  type SetScore,
  type EvalReport,
  type EvalOptions,
  type NllResult,
} from './eval/evaluate.js';
export { Worker, type WorkerOptions } from './worker.js';
export { BlobCache } from './shards/fetch.js';
