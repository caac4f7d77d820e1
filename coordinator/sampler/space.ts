import { z } from 'zod';
import { formatIssues, OptimerError } from '../../shared/index.js';

/**
 * A search space. Merge weights are floats in bounds; log, step, integers and categoricals are
 * here because the sampler is a general TPE, usable outside studies (`optimer sample`).
 */
export interface FloatParam {
  type: 'float';
  low: number;
  high: number;
  log?: boolean;
  step?: number;
}
export interface IntParam {
  type: 'int';
  low: number;
  high: number;
  log?: boolean;
  step?: number;
}
export type NumericParam = FloatParam | IntParam;
export type ChoiceValue = string | number | boolean | null;
export interface CategoricalParam {
  type: 'categorical';
  choices: ChoiceValue[];
}
export type Param = NumericParam | CategoricalParam;

export interface SearchSpace {
  params: Record<string, Param>;
}

const paramSchema = z.discriminatedUnion('type', [
  z
    .object({
      type: z.literal('float'),
      low: z.number().finite(),
      high: z.number().finite(),
      log: z.boolean().optional(),
      step: z.number().finite().positive().optional(),
    })
    .strict(),
  z
    .object({
      type: z.literal('int'),
      low: z.number().int(),
      high: z.number().int(),
      log: z.boolean().optional(),
      step: z.number().int().positive().optional(),
    })
    .strict(),
  z
    .object({ type: z.literal('categorical'), choices: z.array(z.union([z.string(), z.number().finite(), z.boolean(), z.null()])) })
    .strict(),
]);

/** Validates a space; errors name the parameter and what is wrong with it. */
export function parseSpace(json: unknown, where: string): SearchSpace {
  const r = z
    .object({ params: z.record(z.string().min(1), paramSchema) })
    .strict()
    .safeParse(json);
  if (!r.success) throw new OptimerError('BAD_ARGUMENT', formatIssues(where, r.error));
  const names = Object.keys(r.data.params);
  if (names.length === 0) throw new OptimerError('BAD_ARGUMENT', `${where}: params: the space has no parameters`);
  for (const name of names) checkParam(name, r.data.params[name]!, where);
  return r.data as SearchSpace;
}

export function checkParam(name: string, p: Param, where: string): void {
  const bad = (msg: string): never => {
    throw new OptimerError('BAD_ARGUMENT', `${where}: params.${name}: ${msg}`);
  };
  if (p.type === 'categorical') {
    if (p.choices.length === 0) bad('a categorical needs at least one choice');
    if (new Set(p.choices.map((c) => JSON.stringify(c))).size !== p.choices.length) bad('choices must be distinct');
    return;
  }
  if (!(p.low < p.high) && !(p.type === 'int' && p.low === p.high)) bad(`empty range [${p.low}, ${p.high}] (low must be below high)`);
  if (p.log && p.low <= 0) bad(`log scale needs low > 0 (got ${p.low})`);
  if (p.log && p.step !== undefined && p.type === 'float') bad('a float cannot be both log-scaled and stepped');
  if (p.log && p.type === 'int' && (p.step ?? 1) !== 1) bad('a log-scaled int must have step 1');
}

/** Sorted parameter names: the order every sampler uses, so proposals are deterministic. */
export function paramNames(space: SearchSpace): string[] {
  return Object.keys(space.params).sort();
}

export function stepOf(p: NumericParam): number | undefined {
  return p.type === 'int' ? (p.step ?? 1) : p.step;
}

/** Snaps a value to the parameter's grid and bounds, and makes ints integers. */
export function snap(p: NumericParam, x: number): number {
  const step = stepOf(p);
  let v = x;
  if (step !== undefined) v = p.low + Math.round((v - p.low) / step) * step;
  v = Math.min(p.high, Math.max(p.low, v));
  if (p.type === 'int') v = Math.round(v);
  return v;
}

export function contains(p: Param, x: ChoiceValue | undefined): boolean {
  if (p.type === 'categorical') return choiceIndex(p, x) >= 0;
  return typeof x === 'number' && Number.isFinite(x) && x >= p.low && x <= p.high;
}

export function choiceIndex(p: CategoricalParam, x: ChoiceValue | undefined): number {
  return x === undefined ? -1 : p.choices.indexOf(x);
}
