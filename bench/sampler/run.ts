/**
 * Sampler benchmark, side by side in one run: our TPE (default settings) against Optuna 3.1's
 * TPE in its multivariate and default modes (Debian's python3-optuna, /usr/bin/python3) and
 * random search, on six standard functions and a noisy merge-like surrogate; then the time to
 * ask one proposal at 100/300/1000 completed trials (8-D), and the constant-liar check (ours
 * and Optuna's, each with 8 trials always in flight, against their sequential runs). An A/A
 * control (our sequential TPE on as many other seeds) shows how far two medians part when there
 * is no real difference, i.e. which differences this many seeds can decide.
 *
 *   npm run bench:sampler -- [--seeds 20] [--budget 200] [--parallel 2] [--out bench/sampler/out]
 *                            [--tpe '{"gammaFactor": 0.15}']   (options for our TPE, as in a study config)
 */
import { spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { Rng } from '../../shared/rng.js';
import { table } from '../../cli/output.js';
import { packageRoot } from '../../shared/package-root.js';
import { createSampler } from '../../coordinator/sampler/create.js';
import { RandomSampler } from '../../coordinator/sampler/random.js';
import type { Sampler, TrialView } from '../../coordinator/sampler/sampler.js';
import { ALL_FUNCTIONS, STANDARD_FUNCTIONS, type BenchFunction } from './functions.js';
import { curve, meanAndError, median, orExit, runOurs, spaceOf, tpeOptions } from './harness.js';
import { writeRegretPlot } from './plot.js';

const { values } = parseArgs({
  options: {
    seeds: { type: 'string', default: '20' },
    budget: { type: 'string', default: '200' },
    parallel: { type: 'string', default: '2' },
    out: { type: 'string', default: join(packageRoot, 'bench', 'sampler', 'out') },
    python: { type: 'string', default: '/usr/bin/python3' },
    tpe: { type: 'string', default: '{}' },
  },
});
const SEEDS = Number(values.seeds);
const BUDGET = Number(values.budget);
const PARALLEL = Number(values.parallel);
const CHECKPOINTS = [50, 100, 200].filter((b) => b <= BUDGET);
const PEER = join(packageRoot, 'bench', 'sampler', 'optuna_peer.py');
/** options for our TPE as a study config's sampler takes them, e.g. '{"minBandwidthFactor": 0.01}' */
const TPE_OPTIONS = orExit(() => tpeOptions('--tpe', values.tpe!));
const ourTpe = (): Sampler => createSampler(TPE_OPTIONS);

type Method = 'ours' | 'optuna-mv' | 'optuna-default' | 'random' | 'ours-liar8' | 'optuna-mv-liar8' | 'ours-other-seeds';
const RUNNING = 8;

/**
 * Optuna through the JSON-lines peer; the objective is evaluated here, so both see the same f.
 * With `running` > 1 that many trials are always in flight, with Optuna's constant liar on.
 */
function runOptuna(fn: BenchFunction, mode: 'multivariate' | 'default', seed: number, running = 1): Promise<number[][]> {
  return new Promise((resolve, reject) => {
    const py = spawn(values.python!, [PEER], { stdio: ['pipe', 'pipe', 'inherit'] });
    const noise = new Rng(seed + 99991);
    const xs: number[][] = [];
    py.on('error', reject);
    py.stdin!.on('error', reject); // a peer that dies mid-run fails this run, not the process
    createInterface({ input: py.stdout! }).on('line', (line) => {
      const x = JSON.parse(line) as number[];
      xs.push(x);
      py.stdin!.write(`${fn.f(x, noise)}\n`);
    });
    py.on('exit', (code) =>
      code === 0 && xs.length === BUDGET ? resolve(xs) : reject(new Error(`optuna peer exited ${code} after ${xs.length} trials`)),
    );
    py.stdin!.write(`${JSON.stringify({ mode, seed, running, trials: BUDGET, space: fn.low.map((lo, i) => [lo, fn.high[i]]) })}\n`);
  });
}

async function pool<T>(jobs: (() => Promise<T>)[], n: number): Promise<T[]> {
  const out: T[] = new Array(jobs.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < jobs.length) {
        const i = next++;
        out[i] = await jobs[i]!();
      }
    }),
  );
  return out;
}

/** 90% bootstrap interval of median(a) / median(b), resampling the seeds of each. */
function ratioInterval(a: number[], b: number[]): [number, number] {
  const rng = new Rng(12345);
  const resample = (xs: number[]) => median(xs.map(() => xs[rng.int(xs.length)]!));
  const N = 2000;
  const ratios = Array.from({ length: N }, () => ratioOf(resample(a), resample(b))).sort((x, y) => x - y);
  return [ratios[Math.round(0.05 * (N - 1))]!, ratios[Math.round(0.95 * (N - 1))]!];
}

/** mean(log10 a) − mean(log10 b) in decades, with its standard error (the seeds of each apart). */
function logDifference(a: number[], b: number[]): { mean: number; se: number; text: string } {
  const [ea, eb] = [a, b].map((xs) => meanAndError(xs.map((x) => Math.log10(x + 1e-12))));
  const d = ea!.mean - eb!.mean;
  const se = Math.hypot(ea!.se, eb!.se);
  return { mean: d, se, text: `${d >= 0 ? '+' : '−'}${Math.abs(d).toFixed(2)} ± ${se.toFixed(2)}` };
}

/** a / b for regrets: 1 when both are 0, ∞ when only b is. */
const ratioOf = (a: number, b: number): number => (b > 0 ? a / b : a === 0 ? 1 : Infinity);

const fmtRegret = (x: number): string => (x === 0 ? '0' : x < 1e-3 || x >= 1e4 ? x.toExponential(2) : x.toPrecision(3));

async function main(): Promise<void> {
  await mkdir(values.out!, { recursive: true });
  const t0 = performance.now();
  const curves: Record<string, Record<Method, number[][]>> = {};
  for (const fn of ALL_FUNCTIONS) {
    const seeds = Array.from({ length: SEEDS }, (_, i) => i + 1);
    const c = {} as Record<Method, number[][]>;
    c.ours = seeds.map((s) => curve(fn, runOurs(fn, ourTpe(), s, BUDGET)));
    c.random = seeds.map((s) => curve(fn, runOurs(fn, new RandomSampler(), s, BUDGET)));
    c['ours-liar8'] = seeds.map((s) => curve(fn, runOurs(fn, ourTpe(), s, BUDGET, RUNNING)));
    // the A/A control: the same sampler on as many other seeds; no real difference exists between
    // it and 'ours', so how far their medians part shows how much this many seeds can decide
    c['ours-other-seeds'] = seeds.map((s) => curve(fn, runOurs(fn, ourTpe(), s + SEEDS, BUDGET)));
    const modes = [
      ['optuna-mv', 'multivariate', 1],
      ['optuna-default', 'default', 1],
      ['optuna-mv-liar8', 'multivariate', RUNNING],
    ] as const;
    const jobs = seeds.flatMap((s) =>
      modes.map(([method, mode, running]) => async () => ({ method, xs: await runOptuna(fn, mode, s, running) })),
    );
    const res = await pool(jobs, PARALLEL);
    for (const [method] of modes) c[method] = res.filter((r) => r.method === method).map((r) => curve(fn, r.xs));
    curves[fn.name] = c;
    process.stderr.write(`${fn.name} done (${((performance.now() - t0) / 1000).toFixed(0)} s)\n`);
  }

  // ---- quality table ------------------------------------------------------------------------
  const rows: (string | number)[][] = [
    ['function', 'budget', 'ours', 'optuna-mv', 'optuna-default', 'random', 'ours / optuna-mv', '90% interval', 'Δ mean log10', 'A/A'],
  ];
  let within = 0;
  let aaWithin = 0;
  let measurablyWorse = 0;
  const standard = new Set(STANDARD_FUNCTIONS.map((f) => f.name));
  for (const [name, c] of Object.entries(curves)) {
    let allBudgets = true;
    let aaAllBudgets = true;
    for (const b of CHECKPOINTS) {
      const at = (k: Method) => c[k].map((cv) => cv[b - 1]!);
      const m = (k: Method) => median(at(k));
      const ratio = ratioOf(m('ours'), m('optuna-mv'));
      if (!(ratio <= 1.1)) allBudgets = false;
      const aa = ratioOf(m('ours-other-seeds'), m('ours'));
      if (!(aa <= 1.1 && aa >= 1 / 1.1)) aaAllBudgets = false;
      const [lo, hi] = ratioInterval(at('ours'), at('optuna-mv'));
      const diff = logDifference(at('ours'), at('optuna-mv'));
      if (standard.has(name) && diff.mean > 2 * diff.se) measurablyWorse++;
      rows.push([
        name,
        b,
        fmtRegret(m('ours')),
        fmtRegret(m('optuna-mv')),
        fmtRegret(m('optuna-default')),
        fmtRegret(m('random')),
        ratio.toFixed(2),
        `${lo.toFixed(2)}–${hi.toFixed(2)}`,
        diff.text,
        aa.toFixed(2),
      ]);
    }
    if (standard.has(name) && allBudgets) within++;
    if (standard.has(name) && aaAllBudgets) aaWithin++;
  }
  const out: string[] = [];
  out.push(
    `median final regret over ${SEEDS} seeds (best noise-free value found − optimum), budget ${BUDGET}; our TPE options: ${values.tpe}`,
  );
  out.push(table(rows));
  out.push(`standard functions where ours ≤ 1.1 × optuna-mv at every budget: ${within} of ${STANDARD_FUNCTIONS.length} (goal: ≥ 5)`);
  out.push('(90% interval: bootstrap over the seeds of both; an interval across 1.1 means this many seeds cannot decide that cell)');
  out.push('(Δ mean log10: mean over seeds of log10 regret, ours − optuna-mv, in decades ± one standard error; +0.04 is 1.1×)');
  out.push(
    `standard-function cells where ours is worse than optuna-mv by more than two standard errors of Δ mean log10: ${measurablyWorse} of ${STANDARD_FUNCTIONS.length * CHECKPOINTS.length}`,
  );
  out.push(
    `(A/A: ours on ${SEEDS} other seeds / ours, a pair with no real difference; within 1/1.1–1.1 at every budget on ${aaWithin} of ${STANDARD_FUNCTIONS.length})`,
  );

  // ---- constant liar: 8 trials always running vs sequential --------------------------------
  const liarRows: (string | number)[][] = [
    [
      'function',
      'ours: sequential',
      `${RUNNING} running`,
      'difference',
      'optuna-mv: sequential',
      `${RUNNING} running`,
      'difference',
      'A/A: other seeds',
      'difference',
    ],
  ];
  let liarWithin = 0;
  let aaLiarWithin = 0;
  for (const [name, c] of Object.entries(curves)) {
    const lr = (k: Method) => median(c[k].map((cv) => Math.log10(cv[BUDGET - 1]! + 1e-12)));
    const diff = (seq: number, par: number) => (100 * (par - seq)) / Math.abs(seq || 1);
    const ours = diff(lr('ours'), lr('ours-liar8'));
    if (ours <= 10) liarWithin++;
    const peer = diff(lr('optuna-mv'), lr('optuna-mv-liar8'));
    const aa = diff(lr('ours'), lr('ours-other-seeds'));
    if (Math.abs(aa) <= 10) aaLiarWithin++;
    liarRows.push([
      name,
      lr('ours').toFixed(3),
      lr('ours-liar8').toFixed(3),
      `${ours.toFixed(1)}%`,
      lr('optuna-mv').toFixed(3),
      lr('optuna-mv-liar8').toFixed(3),
      `${peer.toFixed(1)}%`,
      lr('ours-other-seeds').toFixed(3),
      `${aa.toFixed(1)}%`,
    ]);
  }
  out.push('', `constant liar: median log10 regret after ${BUDGET} evaluations, sequential and with ${RUNNING} always running`);
  out.push(table(liarRows), `ours within 10% of sequential (worse by at most 10%): ${liarWithin} of ${Object.keys(curves).length}`);
  out.push(
    `(A/A: our sequential run on ${SEEDS} other seeds, no real difference; within ±10% of the first on ${aaLiarWithin} of ${Object.keys(curves).length})`,
  );

  // ---- ask time -----------------------------------------------------------------------------
  const fn8: BenchFunction = {
    name: 'sphere-8d',
    dims: 8,
    low: new Array(8).fill(-5),
    high: new Array(8).fill(5),
    min: 0,
    f: (x) => x.reduce((s, v) => s + v * v, 0),
  };
  const histories: Record<string, [number[], number][]> = {};
  const rng = new Rng(7);
  for (const n of [100, 300, 1000]) {
    histories[n] = Array.from({ length: n }, () => {
      const x = fn8.low.map((lo, i) => lo + rng.uniform() * (fn8.high[i]! - lo));
      return [x, fn8.f(x, rng)];
    });
  }
  const ours: Record<string, number> = {};
  const space = spaceOf(fn8);
  const names = Object.keys(space.params).sort();
  const tpe = ourTpe();
  for (const [n, h] of Object.entries(histories)) {
    const trials: TrialView[] = h.map(([x, v], i) => ({
      number: i,
      state: 'complete',
      params: Object.fromEntries(names.map((k, j) => [k, x[j]!])),
      value: v,
    }));
    for (let w = 0; w < 5; w++) tpe.propose(space, trials, 'minimize', new Rng(w));
    const times: number[] = [];
    for (let r = 0; r < 30; r++) {
      const t = performance.now();
      tpe.propose(space, trials, 'minimize', new Rng(r));
      times.push(performance.now() - t);
    }
    ours[n] = median(times);
  }
  const optunaMs = await new Promise<Record<string, number>>((resolve, reject) => {
    const py = spawn(values.python!, [PEER], { stdio: ['pipe', 'pipe', 'inherit'] });
    let text = '';
    py.stdout!.on('data', (d) => (text += d));
    py.on('exit', (code) => (code === 0 ? resolve(JSON.parse(text)) : reject(new Error(`asktime exited ${code}`))));
    py.stdin!.write(`${JSON.stringify({ mode: 'asktime', space: fn8.low.map((lo, i) => [lo, fn8.high[i]]), histories, repeat: 15 })}\n`);
  });
  const speedRows: (string | number)[][] = [['completed trials', 'ours ms', 'optuna-mv ms', 'speed-up']];
  for (const n of Object.keys(histories))
    speedRows.push([n, ours[n]!.toFixed(2), optunaMs[n]!.toFixed(2), `${(optunaMs[n]! / ours[n]!).toFixed(1)}×`]);
  out.push('', 'time to ask one proposal, 8-D float space, median (goal: ≥ 20× at 1000)', table(speedRows));

  const plot = join(values.out!, 'regret.svg');
  await writeRegretPlot(plot, curves, ['ours', 'optuna-mv', 'optuna-default', 'random', 'ours-liar8', 'optuna-mv-liar8'], median);
  out.push('', `regret curves: ${plot}`, `total ${((performance.now() - t0) / 1000).toFixed(0)} s, node ${process.version}`);
  const text = `${out.join('\n')}\n`;
  await writeFile(join(values.out!, 'results.txt'), text);
  process.stdout.write(text);
}

await main();
