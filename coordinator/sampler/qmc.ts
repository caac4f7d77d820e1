import { Rng } from '../../shared/index.js';
import type { Params, Sampler, TrialView } from './sampler.js';
import { paramNames, snap, type SearchSpace } from './space.js';
import { toExternal, transformParam } from './transform.js';

const PRIMES = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107, 109, 113];

/** The radical inverse of i in base b: the i-th point of the van der Corput sequence. */
function radicalInverse(i: number, b: number): number {
  let f = 1;
  let r = 0;
  for (let n = i; n > 0; n = Math.floor(n / b)) {
    f /= b;
    r += f * (n % b);
  }
  return r;
}

/**
 * Quasi-random search: the Halton sequence (one prime base per parameter), shifted by a random
 * offset per dimension drawn from the seed (a Cranley–Patterson rotation), so different seeds give
 * different but equally even designs. Point i goes to the i-th proposal; like Optuna's QMCSampler
 * it ignores results, and covers the space more evenly than random search at small budgets.
 * Categorical dimensions pick the choice whose equal-width cell the coordinate falls in.
 */
export class HaltonSampler implements Sampler {
  readonly name = 'qmc';
  constructor(private readonly seed: number) {}

  propose(space: SearchSpace, trials: readonly TrialView[], _direction: unknown, _rng: Rng): Params {
    const names = paramNames(space);
    if (names.length > PRIMES.length) throw new Error(`qmc: at most ${PRIMES.length} parameters`);
    const shift = new Rng(this.seed);
    const index = trials.length + 1; // skip the origin
    const out: Params = {};
    names.forEach((name, j) => {
      const u = (radicalInverse(index, PRIMES[j]!) + shift.uniform()) % 1;
      const p = space.params[name]!;
      if (p.type === 'categorical') out[name] = p.choices[Math.min(p.choices.length - 1, Math.floor(u * p.choices.length))]!;
      else {
        const t = transformParam(p);
        out[name] = snap(p, toExternal(t, t.low + u * (t.high - t.low)));
      }
    });
    return out;
  }
}
