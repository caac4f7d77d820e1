// Public entry of code both sides use: errors, pool format, ONNX I/O, evaluation sets, weights.
export { OptimerError, isOptimerError, type ErrorCode } from './errors.js';
export { Rng } from './rng.js';
export { parseWeights, mixtureRatios, type MergeWeights } from './weights.js';
export { readEvalSet, type SequenceLimits } from './eval-set.js';
export { buildPool, type BuildPoolOptions } from './pool/build.js';
export { Pool, hashFile } from './pool/reader.js';
export { computeGram, cosineMatrix } from './pool/stats.js';
export {
  readManifest,
  parseManifest,
  MANIFEST_FILE,
  SHARDS_DIR,
  WEIGHTS_LOCATION,
  type PoolManifest,
  type BlobRef,
  type ShardRef,
  type TensorEntry,
  type VectorEntry,
} from './pool/manifest.js';
export { openOnnxModel, type Initializer, type OnnxModelFile } from './onnx/model-file.js';
export { buildFamily, writeFamilyVariant, loadFamilyParams, FAMILY_DOMAINS, DEFAULT_FAMILY_SHAPE, type FamilyFiles, type FamilyOptions } from './family/build.js';
