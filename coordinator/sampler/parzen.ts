import type { Rng } from '../../shared/rng.js';
import { truncnormLogMass, truncnormLogPdf, truncnormPpf } from './truncnorm.js';
import type { Transformed } from './transform.js';

export type Bandwidth = 'neighbor' | 'scott';

export interface ParzenOptions {
  priorWeight: number;
  magicClip: boolean;
  endpoints: boolean;
  bandwidth: Bandwidth;
}

/**
 * A mixture of m + 1 product kernels over the modelled space: one truncated normal per
 * observation (all dimensions share the component, which makes it multivariate) plus a
 * prior kernel centred mid-domain with σ = the domain's width.
 */
export class ParzenEstimator {
  readonly logWeights: Float64Array;
  /** per dimension: centres and bandwidths of the K components (prior last) */
  readonly mus: Float64Array[];
  readonly sigmas: Float64Array[];

  constructor(
    readonly dims: Transformed[],
    obs: number[][], // m × d, modelled space
    weights: number[], // m
    opt: ParzenOptions,
  ) {
    const m = obs.length;
    const K = m + 1;
    const w = [...weights, opt.priorWeight];
    const total = w.reduce((a, b) => a + b, 0);
    this.logWeights = Float64Array.from(w, (x) => Math.log(x / total));
    this.mus = dims.map((t, j) => {
      const mu = new Float64Array(K);
      for (let i = 0; i < m; i++) mu[i] = obs[i]![j]!;
      mu[m] = (t.low + t.high) / 2;
      return mu;
    });
    this.sigmas = dims.map((t, j) => {
      const range = t.high - t.low;
      const col = obs.map((o) => o[j]!);
      const s = opt.bandwidth === 'scott'
        ? col.map(() => 0.2 * Math.max(m, 1) ** (-1 / (dims.length + 4)) * range)
        : neighborBandwidths(col, t.low, t.high, opt.endpoints);
      const min = opt.magicClip ? range / Math.min(100, 1 + K) : 1e-12;
      const sig = new Float64Array(K);
      for (let i = 0; i < m; i++) sig[i] = Math.min(range, Math.max(min, s[i]!));
      sig[m] = range; // the prior is not clipped
      return sig;
    });
  }

  /** `n` draws in the modelled space (then snapped to grids by the caller). */
  sample(rng: Rng, n: number): number[][] {
    const probs = Array.from(this.logWeights, Math.exp);
    const out: number[][] = [];
    for (let s = 0; s < n; s++) {
      const k = rng.categorical(probs);
      out.push(this.dims.map((t, j) => {
        const mu = this.mus[j]![k]!;
        const sigma = this.sigmas[j]![k]!;
        return mu + sigma * truncnormPpf(rng.uniform(), (t.low - mu) / sigma, (t.high - mu) / sigma);
      }));
    }
    return out;
  }

  /** ln density (ln mass per grid cell for grid dimensions) of a point in the modelled space. */
  logPdf(x: number[], cells: ([number, number] | undefined)[]): number {
    const K = this.logWeights.length;
    const terms = new Float64Array(K);
    let max = -Infinity;
    for (let k = 0; k < K; k++) {
      let v = this.logWeights[k]!;
      for (let j = 0; j < this.dims.length && v > -Infinity; j++) {
        const t = this.dims[j]!;
        const mu = this.mus[j]![k]!;
        const sigma = this.sigmas[j]![k]!;
        const cell = cells[j];
        v += cell ? truncnormLogMass(cell[0], cell[1], mu, sigma, t.low, t.high) : truncnormLogPdf(x[j]!, mu, sigma, t.low, t.high);
      }
      terms[k] = v;
      if (v > max) max = v;
    }
    if (max === -Infinity) return -Infinity;
    let sum = 0;
    for (let k = 0; k < K; k++) sum += Math.exp(terms[k]! - max);
    return max + Math.log(sum);
  }
}

/**
 * Optuna's neighbour rule: each centre's σ is the larger gap to its sorted neighbours, the
 * domain ends counting as neighbours; without `endpoints` the outermost centres use only their
 * inner gap (when there are at least two).
 */
export function neighborBandwidths(mus: number[], low: number, high: number, endpoints: boolean): number[] {
  const m = mus.length;
  if (m === 0) return [];
  const order = mus.map((_, i) => i).sort((a, b) => mus[a]! - mus[b]! || a - b);
  const seq = [low, ...order.map((i) => mus[i]!), high];
  const sorted = order.map((_, r) => Math.max(seq[r + 1]! - seq[r]!, seq[r + 2]! - seq[r + 1]!));
  if (!endpoints && m >= 2) {
    sorted[0] = seq[2]! - seq[1]!;
    sorted[m - 1] = seq[m]! - seq[m - 1]!;
  }
  const out = new Array<number>(m);
  order.forEach((i, r) => (out[i] = sorted[r]!));
  return out;
}

/** Optuna's default_weights: ones, or for m ≥ 25 a ramp from 1/m up to 1 then 25 ones. */
export function defaultWeights(m: number): number[] {
  if (m < 25) return new Array<number>(m).fill(1);
  const ramp = m - 25;
  const out: number[] = [];
  for (let i = 0; i < ramp; i++) out.push(ramp === 1 ? 1 / m : 1 / m + ((1 - 1 / m) * i) / (ramp - 1));
  return [...out, ...new Array<number>(25).fill(1)];
}

/** Optuna's default_gamma: how many finished trials form the "below" (good) group. */
export function defaultGamma(n: number): number {
  return Math.min(Math.ceil(0.1 * n), 25);
}
