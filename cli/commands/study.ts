import type { Command } from 'commander';
import type { MergeSummary, StudyListItem, StudyReport, StudyStatus } from '../../coordinator/index.js';
import { formatDuration, fmt, printJson, table } from '../output.js';
import { readList, readStatus, type StatusVia, storeDbPath, withStore } from '../status-source.js';
import { cacheText, transferLines } from '../worker-cache-text.js';

type Run = (fn: () => Promise<void>, json?: boolean) => Promise<void>;

export const DEFAULT_STORE = '.optimer';
const SUMMARY_ONLY = { offset: 0, limit: 0 };

export { storeDbPath, withStore };

/**
 * Weights in the form `--weights` takes (`ja=0.6693...,zh=0.19...`), exact: pasted into
 * `optimer eval|export --weights`, they give the very merge that was scored.
 */
export function weightsText(w: Record<string, number>): string {
  return Object.entries(w)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
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
  lines.push('', `best weights (--weights): ${weightsText(r.best.weights)}`);
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

function viaText(via: StatusVia): string {
  return via.kind === 'nats' ? `live, from the coordinator on ${via.url}` : `from the record in ${via.path}`;
}

/** The first lines of `study status`: state, the current phase's progress, best, ETA, the mesh. */
export function renderStatus(st: StudyStatus, via: StatusVia): string {
  const s = st.summary;
  const t = s.trials;
  const lines = [
    `study ${s.study} (${viaText(via)}): ${s.state}, phase ${s.phase} ${s.progress.done}/${s.progress.total}; ` +
      `${t.created} of ${t.budget} trials created, ${t.complete} complete, ${t.failed} failed, ${t.running} running` +
      (s.tests.total > 0 ? `; tests ${s.tests.complete + s.tests.failed}/${s.tests.total}` : ''),
  ];
  if (s.failure) {
    const f = s.failure;
    lines.push(
      s.state === 'failed'
        ? `stopped: trials #${f.trials.join(', #')} failed in a row with ${f.code}: ${f.message} (fix it and rerun the study to resume)`
        : `resuming after trials #${f.trials.join(', #')} failed with ${f.code}`,
    );
  }
  if (s.best) {
    lines.push(`best ${s.metric} ${fmt(s.best.objective ?? NaN)} (trial ${s.best.trial}, ${s.best.label})`);
    lines.push(`best weights (--weights): ${s.best.weightsArg}`);
  } else lines.push('no complete trial yet');
  if (s.eta) lines.push(`ETA ${formatDuration(s.eta.seconds)} for the ${s.phase} phase (${fmt(s.eta.jobsPerMinute, 1)} per minute)`);
  if (s.mesh) {
    const m = s.mesh;
    lines.push(`workers: ${m.workers} (${m.busy} busy, ${m.idle} idle, ${m.lost} lost)`);
    if (st.workers.length > 0)
      lines.push(
        table([
          ['worker', 'state', 'provider', 'device', 'memory', 'trials/min', 'job', 'answered', 'failed', 'cache', 'last seen'],
          ...st.workers.map((w) => [
            w.id,
            w.state === 'idle' && w.capabilities?.onlyWhenIdle && !w.capabilities.gpuIdle ? 'idle (GPU in use)' : w.state,
            w.capabilities?.provider || w.provider || '-',
            w.capabilities?.deviceName || '-',
            w.capabilities?.memoryGb ? `${fmt(w.capabilities.memoryGb, 1)} GB` : '-',
            w.capabilities?.trialsPerMinute ? fmt(w.capabilities.trialsPerMinute, 1) : '-',
            w.job ? `${w.job.study} ${w.job.kind === 'TEST' ? 'test' : 'trial'} ${w.job.trial}#${w.job.attempt}` : '-',
            w.completed,
            w.failed,
            cacheText(w),
            `${formatDuration(w.silentMs / 1000)} ago`,
          ]),
        ]),
      );
    const transfers = transferLines(st.workers);
    if (transfers.length > 0) lines.push('transfers:', ...transfers);
  }
  return lines.join('\n');
}

function trialsTable(st: StudyStatus): string {
  return table([
    ['#', 'label', 'state', 'attempt', 'objective', 'weights (--weights)', 'worker', 'fetch s', 'merge s', 'eval s', 'error'],
    ...st.trials.items.map((t) => [
      t.number,
      t.label,
      t.state,
      t.attempt,
      t.objective !== null ? fmt(t.objective) : (t.error?.code ?? '-'),
      t.weightsArg,
      t.worker ?? '-',
      t.timings ? fmt(t.timings.fetchMs / 1000, 2) : '-',
      t.timings ? fmt(t.timings.mergeMs / 1000, 2) : '-',
      t.timings ? fmt(t.timings.evalMs / 1000, 2) : '-',
      t.error ? t.error.message.replace(/\s+/g, ' ').slice(0, 120) : '',
    ]),
  ]);
}

function listTable(studies: StudyListItem[]): string {
  if (studies.length === 0) return 'no studies';
  return table([
    ['study', 'state', 'phase', 'done', 'trials', 'failed', 'best', 'ETA', 'live'],
    ...studies.map((s) => [
      s.study,
      s.state,
      s.phase,
      `${s.progress.done}/${s.progress.total}`,
      `${s.trials.complete}/${s.trials.budget}`,
      s.trials.failed,
      s.best?.objective != null ? fmt(s.best.objective) : '-',
      s.eta ? formatDuration(s.eta.seconds) : '-',
      s.live ? 'yes' : 'no',
    ]),
  ]);
}

export function registerStudy(program: Command, run: Run): void {
  const study = program
    .command('study')
    .description("read a study's record, or ask its running coordinator (with --nats, or when its store is in use)");
  const where = (c: Command) =>
    c
      .option('--store <dir>', 'store directory (locked by a running coordinator: asked over NATS instead)', DEFAULT_STORE)
      .option('--nats <url>', 'ask the running coordinators over this NATS instead of reading a store')
      .option('--json', 'print as JSON');
  const common = (c: Command) => where(c.argument('<name>', 'study name'));

  common(study.command('status').description('state, progress of the current phase, best so far, ETA, the workers')).action(
    (name: string, o) =>
      run(async () => {
        const { status, via } = await readStatus(o, name, SUMMARY_ONLY);
        if (o.json) return printJson({ ...status.summary, workers: status.workers });
        process.stdout.write(`${renderStatus(status, via)}\n`);
      }, o.json),
  );

  common(study.command('best').description('the best merge, its scores, mixture ratios, and the baselines')).action((name: string, o) =>
    run(async () => {
      const { status } = await readStatus(o, name, SUMMARY_ONLY);
      if (o.json) printJson(status.summary);
      else process.stdout.write(`${renderReport(status.summary)}\n`);
    }, o.json),
  );

  common(study.command('trials').description('every trial: state, weights, objective, worker, timings, errors')).action((name: string, o) =>
    run(async () => {
      const { status } = await readStatus(o, name);
      if (o.json) return printJson(status.trials.items);
      process.stdout.write(`${trialsTable(status)}\n`);
    }, o.json),
  );

  where(study.command('list').description('the studies of a store, or (with --nats) of every running coordinator')).action((o) =>
    run(async () => {
      const { studies } = await readList(o);
      if (o.json) return printJson(studies);
      process.stdout.write(`${listTable(studies)}\n`);
    }, o.json),
  );
}
