import { Rng, seedFor } from '../../shared/rng.js';
import type { Sampler, TrialView } from '../../coordinator/sampler/sampler.js';
import type { SearchSpace } from '../../coordinator/sampler/space.js';
import { parseSamplerConfig } from '../../coordinator/study/config.js';
import type { SamplerSpec } from '../../coordinator/sampler/create.js';
import type { BenchFunction } from './functions.js';

/** The function's box as a search space: one float parameter per dimension (x00, x01, …). */
export function spaceOf(fn: BenchFunction): SearchSpace {
  return {
    params: Object.fromEntries(
      fn.low.map((lo, i) => [`x${String(i).padStart(2, '0')}`, { type: 'float' as const, low: lo, high: fn.high[i]! }]),
    ),
  };
}

/** Best-so-far regret curve (noise-free value of the best point seen) of one run. */
export function curve(fn: BenchFunction, xs: number[][]): number[] {
  let best = Infinity;
  return xs.map((x) => (best = Math.min(best, (fn.clean ?? ((v) => fn.f(v, new Rng(0))))(x) - fn.min)));
}

/**
 * One run of one of our samplers: the points it proposed, in order. With `running` > 1, that many
 * trials are always in flight (the oldest is told when the next is asked), as with that many
 * workers; the sampler sees the others as running (constant liar).
 */
export function runOurs(fn: BenchFunction, sampler: Sampler, seed: number, budget: number, running = 1): number[][] {
  const space = spaceOf(fn);
  const names = Object.keys(space.params).sort();
  const noise = new Rng(seed + 99991);
  const trials: TrialView[] = [];
  const xs: number[][] = [];
  const pending: number[] = [];
  const tell = (n: number): void => {
    const t = trials[n]!;
    t.state = 'complete';
    t.value = fn.f(
      names.map((k) => t.params[k] as number),
      noise,
    );
  };
  while (trials.length < budget) {
    const number = trials.length;
    const params = sampler.propose(space, trials, 'minimize', new Rng(seedFor(seed, number)));
    trials.push({ number, state: 'running', params });
    xs.push(names.map((k) => params[k] as number));
    pending.push(number);
    if (pending.length >= running) tell(pending.shift()!);
  }
  return xs;
}

/** Options for our TPE given on the command line as JSON, checked as a study config's sampler. */
export function tpeOptions(flag: string, text: string): SamplerSpec {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`${flag}: not JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error(`${flag}: expected a JSON object of TPE options`);
  return parseSamplerConfig({ ...json, name: 'tpe' }, flag);
}

/** The value of `f`, or, when it throws (a bad option), its message on stderr and exit 2. */
export function orExit<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    process.exit(2);
  }
}

/** Mean of `xs` and its standard error. */
export function meanAndError(xs: number[]): { mean: number; se: number } {
  const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
  return { mean, se: Math.sqrt(xs.reduce((s, x) => s + (x - mean) ** 2, 0) / (xs.length - 1) / xs.length) };
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
