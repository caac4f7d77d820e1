/** The study objective: Σ weight·score / Σ weight over the sets; NaN when a set has no score. */
export function objectiveOf(scores: readonly { name: string; score: number }[], sets: readonly { name: string; weight: number }[]): number {
  let num = 0;
  let den = 0;
  for (const s of sets) {
    const got = scores.find((x) => x.name === s.name);
    if (!got) return NaN;
    num += s.weight * got.score;
    den += s.weight;
  }
  return num / den;
}

/** Σ weight·score / Σ weight of scores that carry their own weights. */
export function weightedMean(scores: readonly { score: number; weight: number }[]): number {
  let num = 0;
  let den = 0;
  for (const s of scores) {
    num += s.weight * s.score;
    den += s.weight;
  }
  return num / den;
}

export type Direction = 'minimize' | 'maximize';

export function better(direction: Direction, a: number, b: number): boolean {
  return direction === 'minimize' ? a < b : a > b;
}
