import { DEFAULT_FAMILY_SHAPE, loadFamilyParams, type FamilyFiles } from '../../shared/family/build.js';
import { paramNames, referenceNll, type FamilyParams } from '../../shared/family/model.js';
import { readEvalSet } from '../../shared/eval-set.js';
import { buildPool } from '../../shared/pool/build.js';

export const limits = { vocab: DEFAULT_FAMILY_SHAPE.vocab, contextLength: DEFAULT_FAMILY_SHAPE.contextLength };

export function buildFamilyPool(f: FamilyFiles, out: string) {
  return buildPool({ base: f.base, vectors: Object.entries(f.checkpoints).map(([name, path]) => ({ name, path })), out });
}

export async function readSeqs(path: string): Promise<number[][]> {
  return (await readEvalSet(path, limits)).map((a) => Array.from(a));
}

/** θ_base + Σ w_i (θ_i − θ_base) computed directly on the family's parameters (float64). */
export async function referenceMerge(f: FamilyFiles, weights: Record<string, number>): Promise<FamilyParams> {
  const base = await loadFamilyParams(f.base);
  const out = { ...base };
  for (const pn of paramNames) {
    const acc = base[pn].slice();
    for (const [name, w] of Object.entries(weights)) {
      const ck = (await loadFamilyParams(f.checkpoints[name]!))[pn];
      for (let i = 0; i < acc.length; i++) acc[i] = acc[i]! + w * (ck[i]! - base[pn][i]!);
    }
    out[pn] = acc;
  }
  return out;
}

export async function referenceScores(
  f: FamilyFiles,
  params: FamilyParams,
  split: 'dev' | 'test' = 'dev',
): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const [name, path] of Object.entries(f[split])) out[name] = referenceNll(DEFAULT_FAMILY_SHAPE, params, await readSeqs(path));
  return out;
}
