export type { Sampler, TrialView, Params, Direction } from './sampler.js';
export { parseSpace, paramNames, snap, type SearchSpace, type Param, type NumericParam, type FloatParam, type IntParam, type CategoricalParam, type ChoiceValue } from './space.js';
export { TpeSampler, DEFAULT_TPE_OPTIONS, type TpeOptions } from './tpe.js';
export { RandomSampler, sampleUniform } from './random.js';
export { defaultGamma, defaultWeights, linearGamma } from './parzen.js';
export { neighborBandwidths, clippedNeighborBandwidths } from './bandwidth.js';
export { HaltonSampler } from './qmc.js';
export { createSampler, SAMPLER_NAMES, type SamplerSpec } from './create.js';
