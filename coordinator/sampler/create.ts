import { HaltonSampler } from './qmc.js';
import { RandomSampler } from './random.js';
import type { Sampler } from './sampler.js';
import { TpeSampler, type TpeOptions } from './tpe.js';

export const SAMPLER_NAMES = ['tpe', 'random', 'qmc'] as const;

export type SamplerSpec = { name: (typeof SAMPLER_NAMES)[number]; seed: number } & Partial<Omit<TpeOptions, 'gamma' | 'weights'>>;

/** The sampler a study config or `optimer sample` names; TPE options pass through. */
export function createSampler(spec: SamplerSpec): Sampler {
  const { name, seed, ...options } = spec;
  if (name === 'random') return new RandomSampler();
  if (name === 'qmc') return new HaltonSampler(seed);
  const defined = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
  return new TpeSampler(defined);
}
