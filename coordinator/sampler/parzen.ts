import type { Rng } from '../../shared/index.js';
import { logGaussMass, truncnormLogMass, truncnormPpf } from './truncnorm.js';
import type { Transformed } from './transform.js';
import { clippedNeighborBandwidths } from './bandwidth.js';

export type Bandwidth = 'neighbor' | 'scott';

export interface ParzenOptions {
  priorWeight: number;
  magicClip: boolean;
  /** with the magic clip, no bandwidth is below this fraction of the range (Optuna: 0.01) */
  minBandwidthFactor: number;
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
  /** per numeric dimension: centres and bandwidths */
  readonly mus: Float64Array[] = [];
  readonly sigmas: Float64Array[] = [];
  /** per categorical dimension: K rows of C log-probabilities */
  private readonly logRows: Float64Array[][] = [];
  /**
   * The density's hot loop (g has one component per trial) reads, per component, the
   * centres and 1/σ of all continuous dimensions side by side (component-major), and adds
   * one constant: ln w_k plus those dimensions' ln normalisers.
   */
  private readonly continuous: number[] = [];
  private readonly centres: Float64Array;
  private readonly invSigmas: Float64Array;
  private readonly constants: Float64Array;

  constructor(
    readonly dims: Dim[],
    columns: ArrayLike<number>[], // per dimension, m observations: modelled value or choice index
    weights: number[], // m
    opt: ParzenOptions,
  ) {
    const m = weights.length;
    const K = m + 1;
    const w = [...weights, opt.priorWeight];
    const total = w.reduce((a, b) => a + b, 0);
    this.logWeights = new Float64Array(K);
    for (let k = 0; k < K; k++) this.logWeights[k] = Math.log(w[k]! / total);
    const numericDims = dims.filter((d) => d.kind === 'numeric').length;
    const logNorms: Float64Array[] = []; // per numeric dimension: ln of each kernel's normaliser
    dims.forEach((d, j) => {
      const col = columns[j]!;
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
      const min = opt.magicClip ? range / Math.min(1 / opt.minBandwidthFactor, 1 + K) : 1e-12;
      const mu = new Float64Array(K);
      const sig = new Float64Array(K);
      if (opt.bandwidth === 'scott') sig.fill(Math.min(range, Math.max(min, 0.2 * Math.max(m, 1) ** (-1 / (numericDims + 4)) * range)));
      else sig.set(clippedNeighborBandwidths(col, t.low, t.high, opt.endpoints, min, range));
      for (let i = 0; i < m; i++) mu[i] = col[i]!;
      mu[m] = (t.low + t.high) / 2;
      sig[m] = range; // the prior is not clipped
      this.mus[j] = mu;
      this.sigmas[j] = sig;
      // the truncation normaliser depends on the kernel only: computed once, not per candidate
      const norms = new Float64Array(K);
      let lastSig = NaN;
      let lastLog = NaN;
      for (let k = 0; k < K; k++) {
        const sk = sig[k]!;
        const a = (t.low - mu[k]!) / sk;
        const b = (t.high - mu[k]!) / sk;
        const logZ = logGaussMass(a, b);
        if (sk !== lastSig) {
          lastSig = sk;
          lastLog = Math.log(sk); // clipped kernels share σ: one log for a run of them
        }
        norms[k] = -lastLog - LN_SQRT_2PI - logZ;
      }
      logNorms[j] = norms;
    });
    // continuous (not grid) dimensions, component-major, for logPdf
    for (let j = 0; j < dims.length; j++) {
      const d = dims[j]!;
      if (d.kind === 'numeric' && d.t.halfStep === undefined) this.continuous.push(j);
    }
    const dc = this.continuous.length;
    this.centres = new Float64Array(K * dc);
    this.invSigmas = new Float64Array(K * dc);
    this.constants = this.logWeights.slice();
    this.continuous.forEach((j, c) => {
      const mu = this.mus[j]!;
      const sig = this.sigmas[j]!;
      const norms = logNorms[j]!;
      for (let k = 0; k < K; k++) {
        this.centres[k * dc + c] = mu[k]!;
        this.invSigmas[k * dc + c] = 1 / sig[k]!;
        this.constants[k] = this.constants[k]! + norms[k]!;
      }
    });
  }

  /** `n` draws (modelled space or choice index), components picked by the mixture weights. */
  sample(rng: Rng, n: number): number[][] {
    const probs = Array.from(this.logWeights, Math.exp);
    const out: number[][] = [];
    for (let s = 0; s < n; s++) {
      const k = rng.categorical(probs);
      out.push(
        this.dims.map((d, j) => {
          if (d.kind === 'categorical') return rng.categorical(Array.from(this.logRows[j]![k]!, Math.exp));
          const mu = this.mus[j]![k]!;
          const sigma = this.sigmas[j]![k]!;
          return mu + sigma * truncnormPpf(rng.uniform(), (d.t.low - mu) / sigma, (d.t.high - mu) / sigma);
        }),
      );
    }
    return out;
  }

  /** ln density (ln mass per grid cell for grid dimensions, ln probability for categoricals). */
  logPdf(x: number[], cells: ([number, number] | undefined)[]): number {
    const K = this.logWeights.length;
    const terms = this.constants.slice();
    for (let j = 0; j < this.dims.length; j++) {
      const d = this.dims[j]!;
      if (d.kind === 'categorical') {
        const rows = this.logRows[j]!;
        for (let k = 0; k < K; k++) terms[k] = terms[k]! + rows[k]![x[j]!]!;
        continue;
      }
      const cell = cells[j];
      if (cell) {
        const mu = this.mus[j]!;
        const sig = this.sigmas[j]!;
        for (let k = 0; k < K; k++) terms[k] = terms[k]! + truncnormLogMass(cell[0], cell[1], mu[k]!, sig[k]!, d.t.low, d.t.high);
      } else if (x[j]! < d.t.low || x[j]! > d.t.high) {
        return -Infinity;
      }
    }
    const dc = this.continuous.length;
    const xs = new Float64Array(dc);
    for (let c = 0; c < dc; c++) xs[c] = x[this.continuous[c]!]!;
    const centres = this.centres;
    const inv = this.invSigmas;
    let max = -Infinity;
    for (let k = 0, o = 0; k < K; k++, o += dc) {
      let q = 0;
      for (let c = 0; c < dc; c++) {
        const z = (xs[c]! - centres[o + c]!) * inv[o + c]!;
        q += z * z;
      }
      const v = terms[k]! - 0.5 * q;
      terms[k] = v;
      if (v > max) max = v;
    }
    if (max === -Infinity) return -Infinity;
    let sum = 0;
    const cutoff = max - 50; // exp(−50) < 2e-22: such components cannot change the sum
    for (let k = 0; k < K; k++) if (terms[k]! > cutoff) sum += Math.exp(terms[k]! - max);
    return max + Math.log(sum);
  }
}

/** Optuna's default_weights: ones, or for m ≥ 25 a ramp from 1/m up to 1 then 25 ones. */
export function defaultWeights(m: number): number[] {
  if (m < 25) return new Array<number>(m).fill(1);
  const ramp = m - 25;
  const out: number[] = [];
  for (let i = 0; i < ramp; i++) out.push(ramp === 1 ? 1 / m : 1 / m + ((1 - 1 / m) * i) / (ramp - 1));
  return [...out, ...new Array<number>(25).fill(1)];
}

/** Optuna's split rule with another factor: the best ⌈factor·n⌉ finished trials, at most 25. */
export function linearGamma(factor: number): (n: number) => number {
  return (n) => Math.min(Math.ceil(factor * n), 25);
}

/** Optuna's default_gamma: how many finished trials form the "below" (good) group. */
export const defaultGamma = linearGamma(0.1);
