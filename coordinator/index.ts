// The public entry of coordinator/: what cli/ may use.
export { baselineMerges, baselineParams, type NamedParams, type NamedWeights } from './baselines.js';
export { Coordinator, type CoordinatorOptions, type Progress } from './coordinator.js';
export { genomeSpace, proposalParams } from './genome-space.js';
export { buildReport, type StudyReport, type MergeSummary } from './report.js';
export { loadStudyConfig, parseStudyConfig, parseSamplerConfig, type StudyConfig } from './study/config.js';
export { StudyStore } from './store/study-store.js';
export { Seeder } from './seeder.js';
export { createSampler, SAMPLER_NAMES, type SamplerSpec } from './sampler/create.js';
export type { Sampler, TrialView, Params } from './sampler/sampler.js';
export { parseSpace, type SearchSpace } from './sampler/space.js';
export { TpeSampler, DEFAULT_TPE_OPTIONS, type TpeOptions } from './sampler/tpe.js';
export { RandomSampler } from './sampler/random.js';
export { HaltonSampler } from './sampler/qmc.js';
