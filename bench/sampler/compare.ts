/**
 * Two settings of our TPE on the same seeds, to decide a change: per function, the mean over
 * seeds of B's log10 regret minus A's (in decades; negative: B is better) at 50, 100 and 200
 * trials, with its standard error. Both runs of a seed draw their first trials alike and see
 * the same noise, and a mean of log regrets is far steadier than a median of regrets, so this
 * decides in a minute what bench/sampler/run.ts's medians cannot at 20 seeds. Needs no Optuna.
 *
 *   npm run bench:sampler:compare -- --b '{"gammaFactor": 0.15}' [--a '{}'] [--seeds 60] [--running 8]
 *   npm run bench:sampler:compare -- --b-running 8     (the cost of 8 workers: same settings, B in parallel)
 */
import { parseArgs } from 'node:util';
import { table } from '../../cli/output.js';
import { createSampler } from '../../coordinator/sampler/create.js';
import { ALL_FUNCTIONS } from './functions.js';
import { curve, meanAndError, orExit, runOurs, tpeOptions } from './harness.js';

const { values } = parseArgs({
  options: {
    a: { type: 'string', default: '{}' },
    b: { type: 'string', default: '{}' },
    seeds: { type: 'string', default: '60' },
    running: { type: 'string', default: '1' },
    'b-running': { type: 'string' },
  },
});
const SEEDS = Number(values.seeds);
const RUNNING = Number(values.running);
const B_RUNNING = Number(values['b-running'] ?? values.running);
const BUDGETS = [50, 100, 200];
const LAST = BUDGETS[BUDGETS.length - 1]!;
const A = orExit(() => tpeOptions('--a', values.a!));
const B = orExit(() => tpeOptions('--b', values.b!));
orExit(() => {
  if (!(Number.isInteger(SEEDS) && SEEDS >= 2) || ![RUNNING, B_RUNNING].every((r) => Number.isInteger(r) && r >= 1))
    throw new Error('--seeds must be an integer ≥ 2, --running and --b-running integers ≥ 1');
});

const t0 = performance.now();
const rows: string[][] = [['function', ...BUDGETS.map((b) => `B − A at ${b} (decades)`)]];
for (const fn of ALL_FUNCTIONS) {
  const diffs = BUDGETS.map(() => [] as number[]);
  for (let seed = 1; seed <= SEEDS; seed++) {
    const [ca, cb] = (
      [
        [A, RUNNING],
        [B, B_RUNNING],
      ] as const
    ).map(([o, running]) => curve(fn, runOurs(fn, createSampler(o), seed, LAST, running)));
    BUDGETS.forEach((b, k) => {
      diffs[k]!.push(Math.log10(cb![b - 1]! + 1e-12) - Math.log10(ca![b - 1]! + 1e-12));
    });
  }
  rows.push([
    fn.name,
    ...diffs.map((d) => {
      const { mean, se } = meanAndError(d);
      const verdict = mean < -2 * se ? ' B better' : mean > 2 * se ? ' B worse' : '';
      return `${mean >= 0 ? '+' : '−'}${Math.abs(mean).toFixed(2)} ± ${se.toFixed(2)}${verdict}`;
    }),
  ]);
}
const mode = (r: number): string => (r === 1 ? 'sequential' : `${r} trials always running`);
process.stdout.write(`A = ${values.a}, ${mode(RUNNING)}; B = ${values.b}, ${mode(B_RUNNING)}; ${SEEDS} seeds\n`);
process.stdout.write(
  `${table(rows)}\n(± one standard error over seeds; "better"/"worse" where the mean is beyond two)\ntotal ${((performance.now() - t0) / 1000).toFixed(0)} s\n`,
);
