import type { Rng } from '../../shared/rng.js';
import { ParzenEstimator, defaultGamma, defaultWeights, type Bandwidth, type Dim } from './parzen.js';
import { sampleUniform } from './random.js';
import type { Direction, Params, Sampler, TrialView } from './sampler.js';
import { choiceIndex, contains, paramNames, snap, type SearchSpace } from './space.js';
import { toExternal, toInternal, transformParam, type Transformed } from './transform.js';

export interface TpeOptions {
  /** finished trials before TPE takes over from random sampling (baselines count) */
  nStartupTrials: number;
  /** candidates drawn from l(x) per proposal */
  nEiCandidates: number;
  /** size of the good group given the number of finished trials */
  gamma: (n: number) => number;
  /** weights of the m observations of a group, oldest first */
  weights: (m: number) => number[];
  priorWeight: number;
  magicClip: boolean;
  endpoints: boolean;
  /** one joint model over all parameters (true) or one model per parameter */
  multivariate: boolean;
  /** running trials join the bad group, so concurrent proposals spread out */
  constantLiar: boolean;
  bandwidth: Bandwidth;
}

/** Optuna's current (5.0-dev) defaults: multivariate, constant liar, neighbour bandwidth. */
export const DEFAULT_TPE_OPTIONS: TpeOptions = {
  nStartupTrials: 10,
  nEiCandidates: 24,
  gamma: defaultGamma,
  weights: defaultWeights,
  priorWeight: 1,
  magicClip: true,
  endpoints: false,
  multivariate: true,
  constantLiar: true,
  bandwidth: 'neighbor',
};

/**
 * Tree-structured Parzen estimator as Optuna's TPESampler computes it: split the finished
 * trials by objective into a good group (the best γ(n)) and the rest, model each with a Parzen
 * mixture l(x) and g(x), draw candidates from l and keep the one maximising ln l − ln g.
 *
 * Follows Optuna: the split, weights, prior, magic clip, endpoint rule, neighbour bandwidth
 * (or the v4.x Scott-like rule), truncated kernels and grid-cell masses, categorical kernels,
 * running trials in the bad group (constant liar), failed and NaN trials ignored, and random
 * start-up until n_startup_trials have finished. Differs: trials whose parameters fall outside the space (e.g. a baseline
 * weight of 1 with bounds [0, 0.5]) are left out of the model instead of being an error; the
 * random stream is ours (xoshiro), so proposals match Optuna's in distribution, not bit for bit.
 */
export class TpeSampler implements Sampler {
  readonly name = 'tpe';
  readonly options: TpeOptions;

  constructor(options: Partial<TpeOptions> = {}) {
    this.options = { ...DEFAULT_TPE_OPTIONS, ...options };
  }

  propose(space: SearchSpace, trials: readonly TrialView[], direction: Direction, rng: Rng): Params {
    const names = paramNames(space);
    const inSpace = (t: TrialView): boolean => names.every((n) => n in t.params && contains(space.params[n]!, t.params[n]));
    const complete = trials.filter((t) => t.state === 'complete' && Number.isFinite(t.value) && inSpace(t));
    if (complete.length < this.options.nStartupTrials) return sampleUniform(space, rng);

    const sign = direction === 'minimize' ? 1 : -1;
    const ranked = [...complete].sort((a, b) => sign * (a.value! - b.value!) || a.number - b.number);
    const nBelow = Math.min(this.options.gamma(complete.length), ranked.length);
    const byNumber = (a: TrialView, b: TrialView): number => a.number - b.number;
    const below = ranked.slice(0, nBelow).sort(byNumber);
    const above = ranked.slice(nBelow);
    if (this.options.constantLiar) above.push(...trials.filter((t) => t.state === 'running' && inSpace(t)));
    above.sort(byNumber);

    if (this.options.multivariate) return this.proposeJoint(space, names, below, above, rng);
    const out: Params = {};
    for (const name of names) Object.assign(out, this.proposeJoint(space, [name], below, above, rng));
    return out;
  }

  private proposeJoint(space: SearchSpace, names: string[], below: TrialView[], above: TrialView[], rng: Rng): Params {
    const params = names.map((n) => space.params[n]!);
    const dims: Dim[] = params.map((p) => (p.type === 'categorical' ? { kind: 'categorical', choices: p.choices.length } : { kind: 'numeric', t: transformParam(p) }));
    const internal = (t: TrialView): number[] =>
      names.map((n, j) => {
        const p = params[j]!;
        const d = dims[j]!;
        return p.type === 'categorical' ? choiceIndex(p, t.params[n]) : toInternal((d as { t: Transformed }).t, t.params[n] as number);
      });
    const opts = { ...this.options };
    const l = new ParzenEstimator(dims, below.map(internal), this.options.weights(below.length), opts);
    const g = new ParzenEstimator(dims, above.map(internal), this.options.weights(above.length), opts);

    let best: Params | undefined;
    let bestScore = -Infinity;
    for (const draw of l.sample(rng, this.options.nEiCandidates)) {
      const x: number[] = [];
      const cells: ([number, number] | undefined)[] = [];
      const ext: Params = {};
      draw.forEach((y, j) => {
        const p = params[j]!;
        const d = dims[j]!;
        if (p.type === 'categorical' || d.kind === 'categorical') {
          x.push(y);
          cells.push(undefined);
          ext[names[j]!] = (p as { choices: Params[string][] }).choices[y]!;
          return;
        }
        const v = snap(p, toExternal(d.t, y));
        x.push(toInternal(d.t, v));
        cells.push(cellOf(d.t, v));
        ext[names[j]!] = v;
      });
      const score = l.logPdf(x, cells) - g.logPdf(x, cells);
      if (best === undefined || score > bestScore) {
        best = ext;
        bestScore = score;
      }
    }
    return best!;
  }
}

function cellOf(t: Transformed, v: number): [number, number] | undefined {
  if (t.halfStep === undefined) return undefined;
  return [toInternal(t, v - t.halfStep), toInternal(t, v + t.halfStep)];
}
