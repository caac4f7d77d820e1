import { Rng } from '../rng.js';

/**
 * Synthetic corpora for the built-in family. Every source is a second-order Markov chain over a
 * shared vocabulary: tokens 0..common−1 are shared "function words", and each domain owns a band
 * of the rest. A domain's transition logits mix the general source's (so domains agree in part,
 * as languages share structure) with its own, and it prefers its own band and avoids the others'
 * (so training on one domain makes the model forget the others, as CPT does).
 */
export interface CorpusSource {
  name: string;
  /** logits of next token given (previous, current): [vocab * vocab * vocab] */
  logits: Float32Array;
}

export interface CorporaShape {
  vocab: number;
  common: number;
  domains: string[];
}

export function makeSources(shape: CorporaShape, seed: number): { general: CorpusSource; domains: CorpusSource[] } {
  const { vocab: V, common, domains } = shape;
  const band = Math.floor((V - common) / domains.length);
  const rng = new Rng(seed);
  const table = (): Float32Array => {
    const t = new Float32Array(V * V);
    for (let i = 0; i < t.length; i++) t[i] = rng.normal();
    return t;
  };
  const P0 = table(); // effect of the current token on the next
  const Q0 = table(); // effect of the previous token
  const shared = 0.5; // fraction of variance a domain shares with the general source
  const build = (name: string, P: Float32Array, Q: Float32Array, bias: Float32Array): CorpusSource => {
    const logits = new Float32Array(V * V * V);
    for (let a = 0; a < V; a++) {
      for (let b = 0; b < V; b++) {
        const off = (a * V + b) * V;
        for (let y = 0; y < V; y++) logits[off + y] = 1.6 * P[b * V + y]! + 0.9 * Q[a * V + y]! + bias[y]!;
      }
    }
    return { name, logits };
  };
  const generalBias = new Float32Array(V).fill(-0.5);
  generalBias.fill(0.5, 0, common);
  const general = build('general', P0, Q0, generalBias);
  const domainSources = domains.map((name, d) => {
    const lo = common + d * band;
    const hi = lo + band;
    const inBand = (t: number): boolean => t >= lo && t < hi;
    // A domain's own grammar concerns its own tokens: transitions from or to its band change,
    // the rest stays the general source's. So its CPT vector lives mostly in its own subspace.
    const mix = (base: Float32Array): Float32Array => {
      const own = table();
      return base.map((v, i) => (inBand(Math.floor(i / V)) || inBand(i % V) ? Math.sqrt(shared) * v + Math.sqrt(1 - shared) * own[i]! : v));
    };
    const bias = generalBias.slice();
    bias.fill(1.5, lo, hi);
    return build(name, mix(P0), mix(Q0), bias);
  });
  return { general, domains: domainSources };
}

/** Samples `count` sequences with lengths uniform in [minLen, maxLen]. */
export function sampleSequences(src: CorpusSource, vocab: number, count: number, minLen: number, maxLen: number, rng: Rng): number[][] {
  const seqs: number[][] = [];
  const probs = new Float64Array(vocab);
  for (let n = 0; n < count; n++) {
    const len = minLen + rng.int(maxLen - minLen + 1);
    const ids: number[] = [];
    let a = 0;
    let b = 0;
    for (let t = 0; t < len; t++) {
      const off = (a * vocab + b) * vocab;
      let max = -Infinity;
      for (let y = 0; y < vocab; y++) max = Math.max(max, src.logits[off + y]!);
      for (let y = 0; y < vocab; y++) probs[y] = Math.exp(src.logits[off + y]! - max);
      const y = rng.categorical(probs);
      ids.push(y);
      a = b;
      b = y;
    }
    seqs.push(ids);
  }
  return seqs;
}
