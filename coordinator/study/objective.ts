import type { SetScoreRecord } from '../store/records.js';

/** The study objective: Σ weight·score / Σ weight over the configured sets. */
export function objectiveOf(scores: SetScoreRecord[], sets: { name: string; weight: number }[]): number {
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

export function better(direction: 'minimize' | 'maximize', a: number, b: number): boolean {
  return direction === 'minimize' ? a < b : a > b;
}
