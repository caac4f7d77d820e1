import type { MergeWeights } from '../shared/index.js';

export interface NamedWeights {
  /** 'base', 'only:<vector>', 'average' or a label of the caller's */
  label: string;
  weights: MergeWeights;
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
