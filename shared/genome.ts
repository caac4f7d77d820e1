import { type ErrorCode, OptimerError } from './errors.js';
import type { TensorEntry } from './pool/manifest.js';
import type { MergeWeights } from './weights.js';

/**
 * A genome maps what the sampler searches (named float parameters) to what a merge applies (a
 * weight per vector on each tensor). Everything between the two goes through it: the search
 * space, baselines and `--weights` (given as one weight per vector), the merge, the exports, the
 * mixture ratios and the report. A new way of weighting (per layer group, say) is a new kind
 * here; the callers do not change.
 *
 * Parameters are plain `Record<string, number>`: that is what the sampler proposes, the record
 * stores and the wire carries.
 */

/** One parameter the sampler searches: a float in [low, high]. */
export interface GenomeParam {
  name: string;
  low: number;
  high: number;
}

/**
 * What a merge applies: θ = θ_base + Σ_k weightsFor(t)[k]·v_k on each tensor t. `vectors` are
 * names of the pool's vectors, in any order (the merge accumulates in pool order, whatever the
 * order here, so results do not depend on it); vectors of the pool not listed weigh 0.
 */
export interface TensorWeighting {
  /** the vectors weighted, each once */
  readonly vectors: readonly string[];
  /**
   * Weight of each vector on `tensor`, aligned with `vectors`. Called once per tensor, never
   * in a merge's inner loop; may return the same array every time.
   */
  weightsFor(tensor: TensorEntry): readonly number[];
}

export type GenomeKind = 'per-vector';

export interface Genome {
  readonly kind: GenomeKind;
  /** the vectors it weighs, in the study's order */
  readonly vectors: readonly string[];
  /** The sampler's search space, in a fixed order; `bounds` are [low, high] per vector. */
  params(bounds: Readonly<Record<string, readonly [number, number]>>): GenomeParam[];
  /** Parameters that weigh each vector by `w` on every tensor (vectors not in `w`: 0). For baselines and `--weights`. */
  fromVectorWeights(w: MergeWeights): Record<string, number>;
  /** What the merge applies for these parameters (checked first). */
  weighting(params: Readonly<Record<string, number>>): TensorWeighting;
  /** One weight per vector summarising the parameters (checked first): mixture ratios and display. */
  vectorWeights(params: Readonly<Record<string, number>>): MergeWeights;
  /** Refuses unknown or missing parameter names and non-finite values, as `code` (BAD_ARGUMENT by default) naming `where`. */
  check(params: Readonly<Record<string, unknown>>, where: string, code?: ErrorCode): void;
}

/** One parameter per vector, named after it, weighing every tensor of that vector alike: the OptiMer paper's search. */
export function perVectorGenome(vectors: readonly string[]): Genome {
  const names = uniqueNames(vectors, 'per-vector genome');
  const genome: Genome = {
    kind: 'per-vector',
    vectors: names,
    params(bounds) {
      return names.map((v) => {
        const b = bounds[v];
        if (!b) throw new OptimerError('BAD_ARGUMENT', `per-vector genome: no bounds for vector '${v}'`);
        return { name: v, low: b[0], high: b[1] };
      });
    },
    fromVectorWeights(w) {
      for (const name of w.keys()) {
        if (!names.includes(name))
          throw new OptimerError('BAD_ARGUMENT', `per-vector genome: no vector '${name}' in the genome (it has: ${names.join(', ')})`);
      }
      return Object.fromEntries(names.map((v) => [v, w.get(v) ?? 0]));
    },
    weighting(params) {
      genome.check(params, 'per-vector genome');
      return uniformWeighting(genome.vectorWeights(params));
    },
    vectorWeights(params) {
      genome.check(params, 'per-vector genome');
      return new Map(names.map((v) => [v, params[v]!]));
    },
    check(params, where, code = 'BAD_ARGUMENT') {
      checkParams(params, names, where, code);
    },
  };
  return Object.freeze(genome);
}

/** Each vector of `w` weighs every tensor by its weight: for callers that already hold per-vector weights. */
export function uniformWeighting(w: MergeWeights): TensorWeighting {
  const vectors = Object.freeze([...w.keys()]);
  const weights = Object.freeze([...w.values()]);
  for (const [k, x] of weights.entries()) {
    if (!Number.isFinite(x))
      throw new OptimerError('BAD_ARGUMENT', `merge weights: weight of '${vectors[k]}' is ${x}, not a finite number`);
  }
  return Object.freeze({ vectors, weightsFor: () => weights });
}

function checkParams(params: Readonly<Record<string, unknown>>, names: readonly string[], where: string, code: ErrorCode): void {
  const fail = (msg: string): never => {
    throw new OptimerError(code, `${where}: ${msg}`);
  };
  for (const [name, x] of Object.entries(params)) {
    if (!names.includes(name)) fail(`unknown parameter '${name}' (expected: ${names.join(', ')})`);
    if (typeof x !== 'number' || !Number.isFinite(x)) fail(`parameter '${name}' is ${String(x)}, not a finite number`);
  }
  const missing = names.filter((n) => !Object.hasOwn(params, n));
  if (missing.length > 0) fail(`missing parameter${missing.length > 1 ? 's' : ''} ${missing.map((n) => `'${n}'`).join(', ')}`);
}

function uniqueNames(vectors: readonly string[], where: string): readonly string[] {
  const seen = new Set<string>();
  for (const v of vectors) {
    if (seen.has(v)) throw new OptimerError('BAD_ARGUMENT', `${where}: vector '${v}' is given twice`);
    seen.add(v);
  }
  return Object.freeze([...vectors]);
}
