import { OptimerError } from './errors.js';

/** Merge weights by vector name; vectors not named weigh 0. */
export type MergeWeights = ReadonlyMap<string, number>;

/** Parses "ja=0.5,zh=-0.2" against the pool's vector names. */
export function parseWeights(spec: string, known: readonly string[], where = '--weights'): MergeWeights {
  const out = new Map<string, number>();
  const trimmed = spec.trim();
  if (trimmed === '') return out;
  for (const part of trimmed.split(',')) {
    const m = /^\s*([^=\s]+)\s*=\s*(\S+)\s*$/.exec(part);
    if (!m) throw new OptimerError('BAD_ARGUMENT', `${where}: '${part}' is not NAME=WEIGHT`);
    const [, name, value] = m as unknown as [string, string, string];
    const w = Number(value);
    if (!Number.isFinite(w)) throw new OptimerError('BAD_ARGUMENT', `${where}: weight of '${name}' is '${value}', not a finite number`);
    if (!known.includes(name))
      throw new OptimerError('BAD_ARGUMENT', `${where}: no vector '${name}' in the pool (it has: ${known.join(', ')})`);
    if (out.has(name)) throw new OptimerError('BAD_ARGUMENT', `${where}: '${name}' is given twice`);
    out.set(name, w);
  }
  return out;
}

/** Mixture ratios: w_i / Σ w_j over the positive weights; negative ones are shown as removed. */
export function mixtureRatios(w: MergeWeights, names: readonly string[]): Record<string, number | 'removed'> {
  const pos = names.reduce((a, n) => a + Math.max(0, w.get(n) ?? 0), 0);
  return Object.fromEntries(
    names.map((n) => {
      const x = w.get(n) ?? 0;
      return [n, x < 0 ? 'removed' : pos > 0 ? x / pos : 0];
    }),
  );
}
