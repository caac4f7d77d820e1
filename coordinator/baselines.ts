import type { Genome, MergeWeights } from '../shared/index.js';

export interface NamedWeights {
  /** 'base', 'only:<vector>', 'average' or a label of the caller's */
  label: string;
  weights: MergeWeights;
}

/** A baseline as a trial: its label and the genome's parameters for it. */
export interface NamedParams {
  label: string;
  params: Record<string, number>;
}

/**
 * The merges every study measures first, as the OptiMer paper compares against them: the base
 * model (all weights 0), each CPT checkpoint alone (its weight 1), and model averaging (1/K each).
 */
export function baselineMerges(vectors: readonly string[]): NamedWeights[] {
  const K = vectors.length;
  return [
    { label: 'base', weights: new Map() },
    ...vectors.map((v) => ({ label: `only:${v}`, weights: new Map([[v, 1]]) })),
    ...(K > 1 ? [{ label: 'average', weights: new Map(vectors.map((v) => [v, 1 / K])) }] : []),
  ];
}

/** The baselines of the genome's vectors, each as the genome's parameters (every vector named, 0 when unweighted). */
export function baselineParams(genome: Genome): NamedParams[] {
  return baselineMerges(genome.vectors).map((b) => ({ label: b.label, params: genome.fromVectorWeights(b.weights) }));
}
