// The public entry of shared/: what coordinator/, worker/ and cli/ may use. Modules inside
// shared/ import each other directly, never this file.
export {
  DEFAULT_ACK_WAIT_SECONDS,
  DEFAULT_AHEAD_PER_WORKER,
  DEFAULT_BATCH_TOKENS,
  DEFAULT_DUPLICATE_WINDOW_MS,
  DEFAULT_FETCH_TIMEOUT_MS,
  PEER_UPLOAD_SLOTS,
  SEEDER_UPLOAD_SLOTS,
  DEFAULT_HEARTBEAT_MS,
  DEFAULT_IDLE_POLL_MS,
  DEFAULT_LOCK_TTL_MS,
  DEFAULT_LOCK_WAIT_MARGIN_MS,
  DEFAULT_LOST_AFTER_HEARTBEATS,
  DEFAULT_MAX_ATTEMPTS,
  DEFAULT_CANARY_TRIALS,
  DEFAULT_FAILURE_STREAK,
  DEFAULT_PULL_EXPIRES_MS,
  DEFAULT_QUEUE_CHECK_MS,
  DEFAULT_QUEUE_DEPTH,
  DEFAULT_RESULT_ACK_WAIT_MS,
  DEFAULT_RESULT_BATCH,
  DEFAULT_RESULT_PULL_EXPIRES_MS,
  DEFAULT_RESULT_PULL_HEARTBEAT_MS,
  DEFAULT_RESULTS_MAX_AGE_MS,
  DEFAULT_SHARD_BYTES,
  DEFAULT_PIECE_BYTES,
  DEFAULT_WEIGHTS_PART_BYTES,
  DEFAULT_STORE_DIR,
  DEFAULT_STUDY_CONTEXTS,
  DEFAULT_SWITCH_MARGIN_TRIALS,
  DEFAULT_STUDY_LIST_MS,
  DEFAULT_TICK_MS,
  DEFAULT_TRIAL_TIMEOUT_SECONDS,
} from './defaults.js';
export { formatBytes, GIB } from './bytes.js';
export { OptimerError, isOptimerError, type ErrorCode } from './errors.js';
export { readEvalSet, loadEvalSet, loadEvalSets, type EvalSetContext, type EvalSetSpec, type LoadedEvalSet } from './eval-set.js';
export {
  buildFamily,
  writeFamilyVariant,
  loadFamilyParams,
  FAMILY_DOMAINS,
  DEFAULT_FAMILY_SHAPE,
  type FamilyFiles,
  type FamilyOptions,
} from './family/build.js';
export {
  CHUNK_BYTES,
  CLIENT_OPTIONS,
  ShardServiceClient,
  grpc,
  pieceClientOptions,
  shardServiceDefinition,
} from './grpc.js';
export {
  perVectorGenome,
  uniformWeighting,
  type Genome,
  type GenomeKind,
  type GenomeParam,
  type TensorWeighting,
} from './genome.js';
export { hashFile, sha256Hex } from './hash.js';
export { closeNats, runAll, withTimeout } from './lifecycle.js';
export { createLogger, LOG_FORMATS, type LogFormat, resolveLogFormat, silentLogger, type Logger } from './logging.js';
export type { LanguageModel, Metric, MetricResult, PrepareContext, SequenceLimits, TextLine } from './metrics/metric.js';
export { contextWindows } from './metrics/text.js';
export { parseTokenizer, type TextTokenizer } from './tokenizer.js';
export {
  METRICS,
  METRIC_NAMES,
  DEFAULT_METRIC,
  isMetricName,
  metricNamed,
  type AnyMetric,
  type MetricItem,
  type MetricLine,
  type MetricName,
} from './metrics/registry.js';
export {
  configureNats,
  connectNats,
  explainNoJetStream,
  natsConnectOptions,
  type NatsSecurity,
  redactNatsUrl,
  splitNatsUrls,
  isNoJetStream,
  noJetStreamMessage,
  publishWithRetry,
} from './nats.js';
export { startNatsServer, findNatsServer, freePort, NATS_INSTALL_HINT, type NatsServerHandle } from './nats-server.js';
export { objectiveOf, weightedMean, better, type Direction } from './objective.js';
export { intAttr, node, setExternal, tensor, valueInfo } from './onnx/build.js';
export {
  bfloat16FromFloatBits,
  DataType,
  decodeFloats,
  dtypeBytes,
  dtypeOf,
  encodeFloats,
  halfFromFloatBits,
  halfToFloatTable,
  type DtypeName,
} from './onnx/dtype.js';
export { openOnnxModel, type Initializer, type OnnxModelFile } from './onnx/model-file.js';
export {
  decodeModel,
  encodeModel,
  toNumber,
  type AttributeProto,
  type GraphProto,
  type ModelProto,
  type NodeProto,
  type TensorProto,
  type TensorShapeDim,
  type ValueInfoProto,
} from './onnx/proto.js';
export { packageRoot } from './package-root.js';
export { NATIVE_DTYPE, nativeKernels, type NativeKernels } from './native-kernels.js';
export { buildPool, MAX_TENSOR_BYTES, type BuildPoolOptions } from './pool/build.js';
export { describeModel, feedableInputs, type DescribeOptions } from './pool/lm-io.js';
export {
  readManifest,
  parseManifest,
  MANIFEST_FILE,
  SHARDS_DIR,
  WEIGHTS_LOCATION,
  partName,
  weightParts,
  type WeightPart,
  type PoolManifest,
  type ModelDescription,
  type ModelIo,
  type PastInput,
  type IdType,
  type BlobRef,
  type ShardRef,
  type TensorEntry,
  type VectorEntry,
} from './pool/manifest.js';
export { Pool } from './pool/reader.js';
export { ShardMaps } from './pool/shard-maps.js';
export { computeGram, cosineMatrix } from './pool/stats.js';
export { stopProcess } from './process.js';
export { EXECUTION_PROVIDERS, isExecutionProvider, type ExecutionProvider, WEIGHT_FEEDS, type WeightFeed } from './providers.js';
export { Backoff, retry, sleep, type BackoffOptions } from './retry.js';
export { Seeder, type ServedCounters } from './seeder.js';
export {
  configureGrpcTls,
  grpcClientCredentials,
  grpcServerCredentials,
  grpcTlsEnabled,
  readTlsFiles,
  type TlsFiles,
  type TlsPem,
} from './tls.js';
export { Bitfield, pieceCount, pieceRange, pickRarest, PieceHasher, type PieceList } from './pieces.js';
export { Rng, seedFor } from './rng.js';
export { formatIssues } from './validate.js';
export { parseWeights, mixtureRatios, type MergeWeights } from './weights.js';
export {
  announcementCodec,
  proposalCodec,
  resultCodec,
  studyNameSchema,
  subjects,
  resultsConsumer,
  RESULTS_STREAM,
  STUDIES_BUCKET,
  LOCKS_BUCKET,
  TRIALS_STREAM,
  LEGACY_WORK_CONSUMER,
  workConsumer,
  workerStatusCodec,
  workerActivity,
  type WorkerActivity,
  holderCodec,
  holderKey,
  HOLDERS_BUCKET,
  HOLDER_TTL_MS,
  type Holder,
  type JobKind,
  type Proposal,
  type Result,
  type StudyAnnouncement,
  type WorkerStatus,
  type WorkerCapabilities,
  type WorkerCacheStatus,
  type WorkerTransfer,
  type StudyRequirements,
} from './wire.js';
export { type StudyLimits, whyNotServe } from './study-filter.js';
