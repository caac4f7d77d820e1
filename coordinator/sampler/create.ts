import { HaltonSampler } from './qmc.js';
import { RandomSampler } from './random.js';
import type { Sampler } from './sampler.js';
import { TpeSampler, type TpeOptions } from './tpe.js';
import { linearGamma } from './parzen.js';

export const SAMPLER_NAMES = ['tpe', 'random', 'qmc'] as const;

/**
 * A sampler as a study config or `optimer sample` names it: TPE options pass through, except the
 * split, which is given as Optuna's factor (`gammaFactor` 0.1 is its default_gamma).
 */
export type SamplerSpec = { name: (typeof SAMPLER_NAMES)[number]; seed: number; gammaFactor?: number } & Partial<
  Omit<TpeOptions, 'gamma' | 'weights'>
>;

/** The sampler a study config or `optimer sample` names. */
export function createSampler(spec: SamplerSpec): Sampler {
  const { name, seed, gammaFactor, ...options } = spec;
  if (name === 'random') return new RandomSampler();
  if (name === 'qmc') return new HaltonSampler(seed);
  const defined: Partial<TpeOptions> = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
  if (gammaFactor !== undefined) defined.gamma = linearGamma(gammaFactor);
  return new TpeSampler(defined);
}
