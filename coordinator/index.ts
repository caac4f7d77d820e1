// Public entry of the coordinator side: study config, sampler, record, coordinator, report.
export { baselineMerges, type NamedWeights } from './baselines.js';
export { Coordinator, type CoordinatorOptions, type Progress } from './coordinator.js';
export { buildReport, type StudyReport, type MergeSummary } from './report.js';
export { loadStudyConfig, parseStudyConfig, type StudyConfig } from './study/config.js';
export { StudyStore } from './store/study-store.js';
export { Seeder } from './seeder.js';
export { TpeSampler, RandomSampler, HaltonSampler, createSampler, parseSpace, type Sampler, type SearchSpace } from './sampler/index.js';
