import type { Rng } from '../../shared/index.js';
import type { Params, Sampler } from './sampler.js';
import { paramNames, snap, type SearchSpace } from './space.js';
import { toExternal, transformParam } from './transform.js';

/** Uniform in each parameter's modelled space (log-uniform for log params), snapped to its grid. */
export function sampleUniform(space: SearchSpace, rng: Rng): Params {
  const out: Params = {};
  for (const name of paramNames(space)) {
    const p = space.params[name]!;
    if (p.type === 'categorical') {
      out[name] = p.choices[rng.int(p.choices.length)]!;
      continue;
    }
    const t = transformParam(p);
    out[name] = snap(p, toExternal(t, t.low + rng.uniform() * (t.high - t.low)));
  }
  return out;
}

export class RandomSampler implements Sampler {
  readonly name = 'random';
  propose(space: SearchSpace, _trials: unknown, _direction: unknown, rng: Rng): Params {
    return sampleUniform(space, rng);
  }
}
