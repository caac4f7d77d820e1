import { stepOf, type NumericParam } from './space.js';

/**
 * The space a parameter is modelled in: ln for log params, bounds widened by half a step for
 * grid params (so each grid point owns a cell of equal width), as Optuna does.
 */
export interface Transformed {
  low: number;
  high: number;
  /** half a step in external units, for grid params */
  halfStep: number | undefined;
  log: boolean;
}

export function transformParam(p: NumericParam): Transformed {
  const step = stepOf(p);
  const half = step !== undefined ? step / 2 : undefined;
  const lo = p.low - (half ?? 0);
  const hi = p.high + (half ?? 0);
  const log = Boolean(p.log);
  return { low: log ? Math.log(lo) : lo, high: log ? Math.log(hi) : hi, halfStep: half, log };
}

export function toInternal(t: Transformed, x: number): number {
  return t.log ? Math.log(x) : x;
}

export function toExternal(t: Transformed, y: number): number {
  return t.log ? Math.exp(y) : y;
}
