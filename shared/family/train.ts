import { Rng } from '../rng.js';
import { accumulateGradient, paramNames, zerosLike, type FamilyParams, type FamilyShape } from './model.js';

export interface TrainOptions {
  steps: number;
  batch: number;
  lr: number;
  seed: number;
}

export function initParams(s: FamilyShape, rng: Rng): FamilyParams {
  const init = (n: number, scale: number): Float64Array => Float64Array.from({ length: n }, () => rng.normal() * scale);
  return {
    E: init(s.vocab * s.dim, 0.5),
    A: init(s.dim * s.hidden, 1 / Math.sqrt(s.dim)),
    B: init(s.dim * s.hidden, 1 / Math.sqrt(s.dim)),
    b: new Float64Array(s.hidden),
    U: init(s.hidden * s.vocab, 1 / Math.sqrt(s.hidden)),
    c: new Float64Array(s.vocab),
  };
}

/**
 * Adam on the mean next-token NLL of random mini-batches, in place. Real gradient steps: the
 * family's checkpoints are what continued training actually produces, not perturbed copies.
 */
export function train(s: FamilyShape, p: FamilyParams, data: number[][], opt: TrainOptions): void {
  const rng = new Rng(opt.seed);
  const m = zerosLike(p);
  const v = zerosLike(p);
  const beta1 = 0.9;
  const beta2 = 0.999;
  for (let step = 1; step <= opt.steps; step++) {
    const g = zerosLike(p);
    let tokens = 0;
    for (let i = 0; i < opt.batch; i++) {
      const ids = data[rng.int(data.length)]!;
      accumulateGradient(s, p, ids, g);
      tokens += ids.length - 1;
    }
    const c1 = 1 - beta1 ** step;
    const c2 = 1 - beta2 ** step;
    for (const name of paramNames) {
      const P = p[name];
      const G = g[name];
      const M = m[name];
      const S = v[name];
      for (let i = 0; i < P.length; i++) {
        const gi = G[i]! / tokens;
        M[i] = beta1 * M[i]! + (1 - beta1) * gi;
        S[i] = beta2 * S[i]! + (1 - beta2) * gi * gi;
        P[i] = P[i]! - (opt.lr * (M[i]! / c1)) / (Math.sqrt(S[i]! / c2) + 1e-8);
      }
    }
  }
}
