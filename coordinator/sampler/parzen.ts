import type { Rng } from '../../shared/rng.js';
import { logGaussMass, truncnormLogMass, truncnormPpf } from './truncnorm.js';
import type { Transformed } from './transform.js';

export type Bandwidth = 'neighbor' | 'scott';

export interface ParzenOptions {
  priorWeight: number;
  magicClip: boolean;
  endpoints: boolean;
  bandwidth: Bandwidth;
}

/** A dimension as the estimator models it: numeric (in its modelled space) or an index. */
export type Dim = { kind: 'numeric'; t: Transformed } | { kind: 'categorical'; choices: number };

const LN_SQRT_2PI = 0.5 * Math.log(2 * Math.PI);

/**
 * A mixture of m + 1 product kernels: one per observation (all dimensions share the component,
 * which makes it multivariate) plus the prior. Numeric kernels are normals truncated to the
 * domain, the prior centred mid-domain with σ = the domain's width; categorical kernels put
 * (p/K + 1)/(1 + C·p/K) on the observed choice and p/K/(1 + C·p/K) on each other, the prior row
 * is uniform (Optuna's rules; p = prior weight, K = m + 1).
 */
export class ParzenEstimator {
  readonly logWeights: Float64Array;
  /** per numeric dimension: centres, bandwidths, and ln of each kernel's normaliser */
  readonly mus: Float64Array[] = [];
  readonly sigmas: Float64Array[] = [];
  private readonly logNorms: Float64Array[] = [];
  private readonly invSigmas: Float64Array[] = [];
  /** per categorical dimension: K rows of C log-probabilities */
  private readonly logRows: Float64Array[][] = [];

  constructor(
    readonly dims: Dim[],
    obs: number[][], // m × d, modelled space (numeric) or choice index (categorical)
    weights: number[], // m
    opt: ParzenOptions,
  ) {
    const m = obs.length;
    const K = m + 1;
    const w = [...weights, opt.priorWeight];
    const total = w.reduce((a, b) => a + b, 0);
    this.logWeights = Float64Array.from(w, (x) => Math.log(x / total));
    const numericDims = dims.filter((d) => d.kind === 'numeric').length;
    dims.forEach((d, j) => {
      const col = new Array<number>(m);
      for (let i = 0; i < m; i++) col[i] = obs[i]![j]!;
      if (d.kind === 'categorical') {
        const C = d.choices;
        const rows: Float64Array[] = [];
        for (let k = 0; k < K; k++) {
          const row = new Float64Array(C).fill(m === 0 ? 1 / C : opt.priorWeight / K);
          if (k < m) row[col[k]!] = row[col[k]!]! + 1;
          const sum = row.reduce((a, b) => a + b, 0);
          rows.push(row.map((x) => Math.log(x / sum)));
        }
        this.logRows[j] = rows;
        return;
      }
      const t = d.t;
      const range = t.high - t.low;
      const s = opt.bandwidth === 'scott'
        ? col.map(() => 0.2 * Math.max(m, 1) ** (-1 / (numericDims + 4)) * range)
        : neighborBandwidths(col, t.low, t.high, opt.endpoints);
      const min = opt.magicClip ? range / Math.min(100, 1 + K) : 1e-12;
      const mu = new Float64Array(K);
      const sig = new Float64Array(K);
      for (let i = 0; i < m; i++) {
        mu[i] = col[i]!;
        sig[i] = Math.min(range, Math.max(min, s[i]!));
      }
      mu[m] = (t.low + t.high) / 2;
      sig[m] = range; // the prior is not clipped
      this.mus[j] = mu;
      this.sigmas[j] = sig;
      // the truncation normaliser depends on the kernel only: computed once, not per candidate
      const norms = new Float64Array(K);
      const inv = new Float64Array(K);
      let lastSig = NaN;
      let lastLog = NaN;
      for (let k = 0; k < K; k++) {
        const sk = sig[k]!;
        inv[k] = 1 / sk;
        const a = (t.low - mu[k]!) * inv[k]!;
        const b = (t.high - mu[k]!) * inv[k]!;
        // a kernel 9σ inside both ends loses < 1e-19 of its mass: ln Z = 0 to double precision
        const logZ = a < -9 && b > 9 ? 0 : logGaussMass(a, b);
        if (sk !== lastSig) {
          lastSig = sk;
          lastLog = Math.log(sk); // clipped kernels share σ: one log for a run of them
        }
        norms[k] = -lastLog - LN_SQRT_2PI - logZ;
      }
      this.logNorms[j] = norms;
      this.invSigmas[j] = inv;
    });
  }

  /** `n` draws (modelled space or choice index), components picked by the mixture weights. */
  sample(rng: Rng, n: number): number[][] {
    const probs = Array.from(this.logWeights, Math.exp);
    const out: number[][] = [];
    for (let s = 0; s < n; s++) {
      const k = rng.categorical(probs);
      out.push(this.dims.map((d, j) => {
        if (d.kind === 'categorical') return rng.categorical(Array.from(this.logRows[j]![k]!, Math.exp));
        const mu = this.mus[j]![k]!;
        const sigma = this.sigmas[j]![k]!;
        return mu + sigma * truncnormPpf(rng.uniform(), (d.t.low - mu) / sigma, (d.t.high - mu) / sigma);
      }));
    }
    return out;
  }

  /** ln density (ln mass per grid cell for grid dimensions, ln probability for categoricals). */
  logPdf(x: number[], cells: ([number, number] | undefined)[]): number {
    const K = this.logWeights.length;
    const terms = new Float64Array(this.logWeights);
    for (let j = 0; j < this.dims.length; j++) {
      const d = this.dims[j]!;
      if (d.kind === 'categorical') {
        const rows = this.logRows[j]!;
        for (let k = 0; k < K; k++) terms[k] = terms[k]! + rows[k]![x[j]!]!;
        continue;
      }
      const mu = this.mus[j]!;
      const sig = this.sigmas[j]!;
      const cell = cells[j];
      if (cell) {
        for (let k = 0; k < K; k++) terms[k] = terms[k]! + truncnormLogMass(cell[0], cell[1], mu[k]!, sig[k]!, d.t.low, d.t.high);
        continue;
      }
      const xj = x[j]!;
      const norms = this.logNorms[j]!;
      const inv = this.invSigmas[j]!;
      if (xj < d.t.low || xj > d.t.high) return -Infinity;
      for (let k = 0; k < K; k++) {
        const z = (xj - mu[k]!) * inv[k]!;
        terms[k] = terms[k]! - 0.5 * z * z + norms[k]!;
      }
    }
    let max = -Infinity;
    for (let k = 0; k < K; k++) if (terms[k]! > max) max = terms[k]!;
    if (max === -Infinity) return -Infinity;
    let sum = 0;
    const cutoff = max - 50; // exp(−50) < 2e-22: such components cannot change the sum
    for (let k = 0; k < K; k++) if (terms[k]! > cutoff) sum += Math.exp(terms[k]! - max);
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
  // rank of each centre in (value, index) order, from a native numeric sort plus binary search
  // (a comparator sort was the hot spot of a proposal at 1000 trials)
  const sorted = Float64Array.from(mus).sort();
  const seen = new Map<number, number>();
  const out = new Array<number>(m);
  for (let i = 0; i < m; i++) {
    const v = mus[i]!;
    let lo = 0;
    let hi = m;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (sorted[mid]! < v) lo = mid + 1;
      else hi = mid;
    }
    let r = lo;
    if (lo + 1 < m && sorted[lo + 1] === v) {
      const k = seen.get(v) ?? 0; // ties: the earlier index ranks first
      seen.set(v, k + 1);
      r = lo + k;
    }
    const left = r === 0 ? low : sorted[r - 1]!;
    const right = r === m - 1 ? high : sorted[r + 1]!;
    let s = Math.max(v - left, right - v);
    if (!endpoints && m >= 2) {
      if (r === 0) s = right - v;
      else if (r === m - 1) s = v - left;
    }
    out[i] = s;
  }
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
