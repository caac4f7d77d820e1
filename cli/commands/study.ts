import type { Command } from 'commander';
import { join } from 'node:path';
import { buildReport, type MergeSummary, openLevelStore, type StudyReport, type StudyStore } from '../../coordinator/index.js';
import { fmt, printJson, table } from '../output.js';

type Run = (fn: () => Promise<void>, json?: boolean) => Promise<void>;

export const DEFAULT_STORE = '.optimer';

export function storeDbPath(storeDir: string): string {
  return join(storeDir, 'db');
}

export async function withStore<T>(storeDir: string, fn: (s: StudyStore) => Promise<T>): Promise<T> {
  // reading: a mistyped --store is NOT_FOUND, not a new empty store
  const store = await openLevelStore(storeDbPath(storeDir), { create: false });
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

function weightsText(w: Record<string, number>): string {
  return Object.entries(w)
    .map(([k, v]) => `${k}=${+v.toFixed(4)}`)
    .join(' ');
}

/** The end-of-run report as text. */
export function renderReport(r: StudyReport): string {
  const lines: string[] = [];
  const t = r.trials;
  lines.push(
    `study ${r.study}: ${r.state}, ${t.complete} complete and ${t.failed} failed of ${t.budget} trials (${r.direction} ${r.metric})`,
  );
  if (!r.best) return [...lines, 'no complete trial yet'].join('\n');
  const setNames = Object.keys(r.best.dev);
  const row = (m: MergeSummary, name: string): (string | number)[] => [
    name,
    ...setNames.map((s) => m.dev[s] ?? NaN),
    m.objective ?? NaN,
    m.test ? m.test.mean : '-',
  ];
  lines.push(
    '',
    table([
      ['merge', ...setNames.map((s) => `dev ${s}`), 'dev objective', 'test'],
      row(r.best, `best (#${r.best.trial})`),
      ...r.baselines.map((b) => row(b, b.label)),
    ]),
  );
  lines.push('', `best weights: ${weightsText(r.best.weights)}`);
  lines.push(
    `as data-mixture ratios: ${Object.entries(r.best.mixture)
      .map(([k, v]) => `${k} ${v === 'removed' ? 'removed (negative weight)' : `${(v * 100).toFixed(1)}%`}`)
      .join(', ')}`,
  );
  if (r.best.test)
    lines.push(
      `best on the test sets: ${Object.entries(r.best.test.sets)
        .map(([k, v]) => `${k} ${fmt(v)}`)
        .join(', ')} (mean ${fmt(r.best.test.mean)})`,
    );
  const c = r.compute;
  lines.push(
    `compute: ${fmt(c.totalSeconds, 1)} worker-seconds (fetch ${fmt(c.fetchSeconds, 1)}, merge ${fmt(c.mergeSeconds, 1)}, evaluate ${fmt(c.evalSeconds, 1)}) on ${Object.keys(r.workers).length} workers`,
  );
  return lines.join('\n');
}

export function registerStudy(program: Command, run: Run): void {
  const study = program.command('study').description("read a study's record");
  const common = (c: Command) =>
    c.argument('<name>', 'study name').option('--store <dir>', 'store directory', DEFAULT_STORE).option('--json', 'print as JSON');

  common(study.command('status').description('state, trial counts and the best objective so far')).action((name: string, o) =>
    run(async () => {
      const r = await withStore(o.store, (s) => buildReport(s, name));
      const status = {
        study: r.study,
        state: r.state,
        trials: r.trials,
        best: r.best ? { trial: r.best.trial, objective: r.best.objective } : null,
        compute: r.compute,
        workers: r.workers,
      };
      if (o.json) return printJson(status);
      process.stdout.write(
        `study ${r.study}: ${r.state}; ${r.trials.created} of ${r.trials.budget} trials created, ${r.trials.complete} complete, ${r.trials.failed} failed, ${r.trials.running} running` +
          (r.best ? `; best objective ${fmt(r.best.objective!)} (trial ${r.best.trial})` : '') +
          '\n',
      );
    }, o.json),
  );

  common(study.command('best').description('the best merge, its scores, mixture ratios, and the baselines')).action((name: string, o) =>
    run(async () => {
      const r = await withStore(o.store, (s) => buildReport(s, name));
      if (o.json) printJson(r);
      else process.stdout.write(`${renderReport(r)}\n`);
    }, o.json),
  );

  common(study.command('trials').description('every trial: state, weights, objective, worker, timings')).action((name: string, o) =>
    run(async () => {
      const trials = await withStore(o.store, async (s) => {
        await buildReport(s, name); // NOT_FOUND for an unknown study
        return s.listJobs(name, 'TRIAL');
      });
      if (o.json) return printJson(trials);
      process.stdout.write(
        `${table([
          ['#', 'label', 'state', 'attempt', 'objective', 'weights', 'worker', 'fetch s', 'merge s', 'eval s'],
          ...trials.map((t) => [
            t.number,
            t.label,
            t.state,
            t.attempt,
            t.value !== undefined ? fmt(t.value) : (t.error?.code ?? '-'),
            weightsText(t.params),
            t.worker ?? '-',
            t.timings ? fmt(t.timings.fetchMs / 1000, 2) : '-',
            t.timings ? fmt(t.timings.mergeMs / 1000, 2) : '-',
            t.timings ? fmt(t.timings.evalMs / 1000, 2) : '-',
          ]),
        ])}\n`,
      );
    }, o.json),
  );
}
