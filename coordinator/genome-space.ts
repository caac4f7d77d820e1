import { type Genome, OptimerError } from '../shared/index.js';
import type { Params } from './sampler/sampler.js';
import type { SearchSpace } from './sampler/space.js';

/**
 * What the coordinator needs of a genome, in the sampler's terms: the search space its
 * parameters span, and a proposal read back as the genome's parameters.
 */

/** One float parameter per genome parameter, in the genome's order, bounded as the study says. */
export function genomeSpace(genome: Genome, bounds: Readonly<Record<string, readonly [number, number]>>): SearchSpace {
  return {
    params: Object.fromEntries(genome.params(bounds).map((p) => [p.name, { type: 'float' as const, low: p.low, high: p.high }])),
  };
}

/**
 * A sampler's proposal over `space` (a genome's) as the genome's parameters: the space's names,
 * in its order, each a finite number; what a trial record stores and the wire carries.
 */
export function proposalParams(genome: Genome, space: SearchSpace, proposed: Params, where = 'proposal'): Record<string, number> {
  const params: Record<string, number> = {};
  for (const name of Object.keys(space.params)) {
    const x = proposed[name];
    if (typeof x !== 'number') throw new OptimerError('RUNTIME', `${where}: parameter '${name}' is ${String(x)}, not a number`);
    params[name] = x;
  }
  genome.check(params, where, 'RUNTIME');
  return params;
}
