// Public entry of the coordinator side (study, sampler, scheduler and seeder arrive with the search).
export { baselineMerges, type NamedWeights } from './baselines.js';
