import { better, mixtureRatios, OptimerError, perVectorGenome } from '../shared/index.js';
import type { JobRecord, StudyRecord } from './store/records.js';
import type { StudyStore } from './store/store.js';

export interface MergeSummary {
  trial: number | null;
  label: string;
  weights: Record<string, number>;
  /** the dev objective (weighted mean over the sets) */
  objective: number | null;
  dev: Record<string, number>;
  /** held-out scores and their weighted mean, for sets with a test file */
  test: { mean: number; sets: Record<string, number> } | null;
}

export interface StudyReport {
  study: string;
  state: StudyRecord['state'];
  direction: 'minimize' | 'maximize';
  /** the sets' metric; the distinct ones, comma-separated, if the sets mix metrics */
  metric: string;
  trials: { budget: number; created: number; complete: number; failed: number; running: number };
  best: (MergeSummary & { mixture: Record<string, number | 'removed'> }) | null;
  baselines: MergeSummary[];
  /** worker-seconds spent per phase, over every attempt that reported timings */
  compute: { fetchSeconds: number; mergeSeconds: number; evalSeconds: number; totalSeconds: number };
  workers: Record<string, number>;
}

/** What `optimer run` prints at the end and `optimer study best|status` reads back. */
export async function buildReport(store: StudyStore, name: string): Promise<StudyReport> {
  const study = await store.getStudy(name);
  if (!study) throw new OptimerError('NOT_FOUND', `no study '${name}' in ${store.path}`);
  return reportFromRecords(study, await store.listJobs(name, 'TRIAL'), await store.listJobs(name, 'TEST'));
}

/** The report of a study from its records (trials and tests in number order). */
export function reportFromRecords(study: StudyRecord, trials: readonly JobRecord[], tests: readonly JobRecord[]): StudyReport {
  const name = study.name;
  const c = study.config;

  const dir = c.objective.direction;
  const complete = trials.filter((t) => t.state === 'complete');
  const best = complete.reduce<JobRecord | undefined>((b, t) => (!b || better(dir, t.value!, b.value!) ? t : b), undefined);
  const testFor = (label: string): MergeSummary['test'] => {
    const t = tests.find((x) => x.label === label && x.state === 'complete');
    if (!t) return null;
    return { mean: t.value!, sets: Object.fromEntries((t.scores ?? []).map((s) => [s.name, s.score])) };
  };
  const summary = (t: JobRecord, testLabel: string): MergeSummary => ({
    trial: t.number,
    label: t.label,
    weights: t.params,
    objective: t.value ?? null,
    dev: Object.fromEntries((t.scores ?? []).map((s) => [s.name, s.score])),
    test: testFor(testLabel),
  });
  const baselineLabels = new Set(['base', 'average', ...study.vectors.map((v) => `only:${v}`)]);
  const compute = { fetchSeconds: 0, mergeSeconds: 0, evalSeconds: 0, totalSeconds: 0 };
  const workers: Record<string, number> = {};
  for (const j of [...trials, ...tests]) {
    for (const a of j.attempts) {
      if (a.timings) {
        compute.fetchSeconds += a.timings.fetchMs / 1000;
        compute.mergeSeconds += a.timings.mergeMs / 1000;
        compute.evalSeconds += a.timings.evalMs / 1000;
      }
      if (a.worker) workers[a.worker] = (workers[a.worker] ?? 0) + 1;
    }
  }
  compute.totalSeconds = compute.fetchSeconds + compute.mergeSeconds + compute.evalSeconds;
  return {
    study: name,
    state: study.state,
    direction: dir,
    metric: [...new Set(c.objective.sets.map((s) => s.metric))].join(', '),
    trials: {
      budget: c.trials,
      created: trials.length,
      complete: complete.length,
      failed: trials.filter((t) => t.state === 'failed').length,
      running: trials.filter((t) => t.state === 'running').length,
    },
    best: best
      ? {
          ...summary(best, baselineLabels.has(best.label) ? best.label : 'best'),
          mixture: mixtureRatios(perVectorGenome(study.vectors).vectorWeights(best.params), study.vectors),
        }
      : null,
    baselines: complete.filter((t) => baselineLabels.has(t.label)).map((t) => summary(t, t.label)),
    compute,
    workers,
  };
}
