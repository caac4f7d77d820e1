import { z } from 'zod';
import { perVectorGenome } from '../../shared/index.js';
import { reportFromRecords } from '../report.js';
import type { JobRecord, StudyRecord } from '../store/records.js';
import type { TrackedWorker } from '../worker-tracker.js';
import { estimateEta } from './eta.js';

/**
 * The status of a study: what `optimer study status|best|trials|list` print and what a dashboard
 * draws. One shape whoever answers: the running coordinator over NATS (`live: true`, with its
 * worker pool and an ETA) or the record read from the store (`live: false`). Plain JSON (no NaN:
 * a missing or non-finite number is null). The schemas below are the contract: a reply that does
 * not match them is refused by the client (a NATS message is hostile until checked).
 */
export const STATUS_FORMAT = 'optimer-status';
export const STATUS_VERSION = 1;
/** Trials per reply unless the request asks for fewer; a reply also stays under NATS's max_payload. */
export const DEFAULT_STATUS_PAGE = 100;
export const MAX_STATUS_PAGE = 500;

const num = z.number().finite();
const weights = z.record(z.string(), num);
const phase = z.enum(['trials', 'tests', 'complete', 'failed']);
const counts = z.object({
  budget: z.number().int(),
  created: z.number().int(),
  complete: z.number().int(),
  failed: z.number().int(),
  running: z.number().int(),
});

const mergeSummary = z.object({
  trial: z.number().int().nullable(),
  label: z.string(),
  weights,
  objective: num.nullable(),
  dev: weights,
  test: z.object({ mean: num, sets: weights }).nullable(),
});

const errorInfo = z.object({ code: z.string(), message: z.string() });

export const trialViewSchema = z.object({
  kind: z.enum(['TRIAL', 'TEST']),
  number: z.number().int().nonnegative(),
  label: z.string(),
  state: z.enum(['running', 'complete', 'failed']),
  /** the current attempt (1, 2, ...) and how many there were */
  attempt: z.number().int().positive(),
  weights,
  /** the same weights in the form `optimer eval|export --weights` takes */
  weightsArg: z.string(),
  /** per-set scores (null: not a finite number) */
  scores: z.record(z.string(), num.nullable()),
  objective: num.nullable(),
  error: errorInfo.nullable(),
  worker: z.string().nullable(),
  provider: z.string().nullable(),
  createdAt: z.string(),
  /** when a worker said it took the current attempt */
  startedAt: z.string().nullable(),
  finishedAt: z.string().nullable(),
  timings: z.object({ fetchMs: num, mergeMs: num, evalMs: num }).nullable(),
});

export const workerViewSchema = z.object({
  id: z.string(),
  /** 'lost': silent for a few heartbeats (or it said it stopped) */
  state: z.enum(['idle', 'busy', 'stopped', 'lost']),
  provider: z.string(),
  /** the job it works on (of any study of the mesh), when busy */
  job: z.object({ study: z.string(), kind: z.enum(['TRIAL', 'TEST']), trial: z.number().int(), attempt: z.number().int() }).nullable(),
  lastSeen: z.string(),
  silentMs: z.number().nonnegative(),
  /** this study's attempts it answered: complete ones and failed ones (errors, bad scores) */
  completed: z.number().int().nonnegative(),
  failed: z.number().int().nonnegative(),
  /** what it says it is (null: an older worker, or not live) */
  capabilities: z
    .object({
      provider: z.string(),
      deviceName: z.string(),
      memoryGb: z.number(),
      concurrency: z.number().int(),
      trialsPerMinute: z.number(),
      tokensPerSecond: z.number(),
      onlyWhenIdle: z.boolean(),
      gpuIdle: z.boolean(),
      studies: z.array(z.string()),
      departments: z.array(z.string()),
    })
    .nullable()
    .default(null),
  /** its blob cache as it last said (null: an older worker, or not live) */
  cache: z
    .object({
      usedBytes: z.number().nonnegative(),
      /** null: no limit */
      limitBytes: z.number().positive().nullable(),
      blobs: z.number().int().nonnegative(),
      /** in use, never evicted: the studies it keeps ready, blobs being fetched */
      pinnedBytes: z.number().nonnegative(),
      evictedBlobs: z.number().int().nonnegative(),
      evictedBytes: z.number().nonnegative(),
    })
    .nullable()
    .default(null),
  /** the blobs it was fetching when it last spoke */
  transfers: z
    .array(
      z.object({
        /** the blob's sha256, first 12 hex digits */
        blob: z.string(),
        bytes: z.number().nonnegative(),
        doneBytes: z.number().nonnegative(),
        bytesPerSecond: z.number().nonnegative(),
        fromPeers: z.number().nonnegative(),
        /** from the study's seeders: the coordinator */
        fromCoordinator: z.number().nonnegative(),
        /** peers it has had pieces from */
        peers: z.number().int().nonnegative(),
        seconds: z.number().nonnegative(),
      }),
    )
    .default([]),
});

export const studySummarySchema = z.object({
  study: z.string(),
  /** answered by the running coordinator (true) or read from a store no coordinator holds */
  live: z.boolean(),
  state: z.enum(['running', 'complete', 'failed']),
  /** why a failed study stopped (the error its streak of trials shares), or a resumed one had */
  failure: z.object({ code: z.string(), message: z.string(), trials: z.array(z.number().int()), at: z.string() }).nullable(),
  phase,
  direction: z.enum(['minimize', 'maximize']),
  metric: z.string(),
  generation: z.number().int(),
  pool: z.string(),
  vectors: z.array(z.string()),
  sets: z.array(z.object({ name: z.string(), metric: z.string(), weight: num, test: z.boolean() })),
  createdAt: z.string(),
  updatedAt: z.string(),
  trials: counts,
  tests: z.object({ total: z.number().int(), complete: z.number().int(), failed: z.number().int(), running: z.number().int() }),
  /** done and total of the current phase (the total does not jump when the tests begin) */
  progress: z.object({ phase, done: z.number().int(), total: z.number().int() }),
  best: mergeSummary.extend({ mixture: z.record(z.string(), z.union([num, z.literal('removed')])), weightsArg: z.string() }).nullable(),
  baselines: z.array(mergeSummary),
  compute: z.object({ fetchSeconds: num, mergeSeconds: num, evalSeconds: num, totalSeconds: num }),
  /** attempts answered per worker, over the study */
  workers: z.record(z.string(), z.number().int()),
  /** time left in the current phase at the recent pace; null when not live or not yet known */
  eta: z.object({ seconds: num, jobsPerMinute: num }).nullable(),
  /** the mesh as the coordinator hears it; null when not live */
  mesh: z.object({ workers: z.number().int(), busy: z.number().int(), idle: z.number().int(), lost: z.number().int() }).nullable(),
});

export const studyStatusSchema = z.object({
  format: z.literal(STATUS_FORMAT),
  version: z.literal(STATUS_VERSION),
  /** when the status was taken */
  at: z.string(),
  summary: studySummarySchema,
  workers: z.array(workerViewSchema),
  /** one page of the trials, in number order; `next` is the offset of the next page, null at the end */
  trials: z.object({
    total: z.number().int(),
    offset: z.number().int(),
    items: z.array(trialViewSchema),
    next: z.number().int().nullable(),
  }),
  /** the held-out test evaluations (few: the best and the baselines) */
  tests: z.array(trialViewSchema),
});

export const studyListItemSchema = studySummarySchema
  .pick({
    study: true,
    live: true,
    state: true,
    phase: true,
    direction: true,
    metric: true,
    trials: true,
    progress: true,
    eta: true,
    updatedAt: true,
  })
  .extend({ best: z.object({ trial: z.number().int().nullable(), objective: num.nullable() }).nullable() });

export const studyListSchema = z.object({
  format: z.literal(STATUS_FORMAT),
  version: z.literal(STATUS_VERSION),
  at: z.string(),
  studies: z.array(studyListItemSchema),
});

/** What a status request may ask: a page of the trials (limit 0: none, the summary alone). */
export const statusRequestSchema = z
  .object({
    offset: z.number().int().nonnegative().default(0),
    limit: z.number().int().nonnegative().max(MAX_STATUS_PAGE).default(DEFAULT_STATUS_PAGE),
  })
  .strict();

export type StatusTrial = z.infer<typeof trialViewSchema>;
export type StatusWorker = z.infer<typeof workerViewSchema>;
export type StudySummary = z.infer<typeof studySummarySchema>;
export type StudyStatus = z.infer<typeof studyStatusSchema>;
export type StudyListItem = z.infer<typeof studyListItemSchema>;
export type StudyList = z.infer<typeof studyListSchema>;
export type StatusRequest = z.input<typeof statusRequestSchema>;

/** What only a running coordinator knows: the mesh, and that the study is being run now. */
export interface LiveView {
  workers: readonly TrackedWorker[];
  nowMs: number;
}

/** Weights in the form `--weights` takes: `a=0.25,b=-0.1`, every vector named, exact (round-trip) values. */
export function weightsArg(vectors: readonly string[], params: Record<string, number>): string {
  const w = perVectorGenome([...vectors]).vectorWeights(params);
  return vectors.map((v) => `${v}=${w.get(v) ?? 0}`).join(',');
}

const finiteOrNull = (x: number | undefined): number | null => (x !== undefined && Number.isFinite(x) ? x : null);

export function statusTrial(study: StudyRecord, j: JobRecord): StatusTrial {
  const current = j.attempts.find((a) => a.attempt === j.attempt);
  return {
    kind: j.kind,
    number: j.number,
    label: j.label,
    state: j.state,
    attempt: j.attempt,
    weights: j.params,
    weightsArg: weightsArg(study.vectors, j.params),
    scores: Object.fromEntries((j.scores ?? []).map((s) => [s.name, finiteOrNull(s.score)])),
    objective: finiteOrNull(j.value),
    error: j.error
      ? { code: j.error.code, message: j.error.message }
      : current?.error
        ? { code: current.error.code, message: current.error.message }
        : null,
    worker: j.worker ?? current?.worker ?? null,
    provider: j.provider ?? null,
    createdAt: j.createdAt,
    startedAt: current?.startedAt ?? null,
    finishedAt: j.finishedAt ?? null,
    timings: j.timings ?? current?.timings ?? null,
  };
}

/** The summary of a study from its record, plus what the running coordinator knows when `live`. */
export function studySummary(study: StudyRecord, trials: readonly JobRecord[], tests: readonly JobRecord[], live?: LiveView): StudySummary {
  const r = reportFromRecords(study, trials, tests);
  const c = study.config;
  const phaseNow: StudySummary['phase'] = study.state !== 'running' ? study.state : tests.length > 0 ? 'tests' : 'trials';
  const finished = (jobs: readonly JobRecord[]) => jobs.filter((j) => j.state !== 'running');
  const progress =
    phaseNow === 'tests'
      ? { phase: phaseNow, done: finished(tests).length, total: tests.length }
      : { phase: phaseNow, done: finished(trials).length, total: Math.max(c.trials, trials.length) };
  let eta: StudySummary['eta'] = null;
  if (live && study.state === 'running') {
    const jobs = phaseNow === 'tests' ? tests : trials;
    const times = finished(jobs)
      .map((j) => Date.parse(j.finishedAt ?? ''))
      .filter(Number.isFinite);
    eta = estimateEta(times, progress.total - progress.done, live.nowMs);
  }
  let mesh: StudySummary['mesh'] = null;
  if (live) {
    const ws = live.workers;
    mesh = {
      workers: ws.length,
      busy: ws.filter((w) => !w.lost && w.state === 'busy').length,
      idle: ws.filter((w) => !w.lost && w.state === 'idle').length,
      lost: ws.filter((w) => w.lost).length,
    };
  }
  return {
    study: study.name,
    live: live !== undefined,
    state: study.state,
    failure: study.failure ?? null,
    phase: phaseNow,
    direction: r.direction,
    metric: r.metric,
    generation: study.generation,
    pool: c.pool,
    vectors: study.vectors,
    sets: c.objective.sets.map((s) => ({ name: s.name, metric: s.metric, weight: s.weight, test: s.test !== undefined })),
    createdAt: study.createdAt,
    updatedAt: study.updatedAt,
    trials: r.trials,
    tests: {
      total: tests.length,
      complete: tests.filter((t) => t.state === 'complete').length,
      failed: tests.filter((t) => t.state === 'failed').length,
      running: tests.filter((t) => t.state === 'running').length,
    },
    progress,
    best: r.best ? { ...r.best, weightsArg: weightsArg(study.vectors, r.best.weights) } : null,
    baselines: r.baselines,
    compute: r.compute,
    workers: r.workers,
    eta,
    mesh,
  };
}

/** This study's workers: the mesh as heard (live), else those named in the record, with what each answered. */
export function workerViews(trials: readonly JobRecord[], tests: readonly JobRecord[], live?: LiveView): StatusWorker[] {
  const answered = new Map<string, { completed: number; failed: number }>();
  for (const j of [...trials, ...tests]) {
    for (const a of j.attempts) {
      if (!a.worker || !a.outcome || a.outcome === 'superseded') continue;
      const n = answered.get(a.worker) ?? { completed: 0, failed: 0 };
      if (a.outcome === 'complete') n.completed++;
      else n.failed++;
      answered.set(a.worker, n);
    }
  }
  if (!live) return [];
  return live.workers
    .map((w) => ({
      id: w.worker,
      state: w.lost ? ('lost' as const) : w.state,
      provider: w.provider,
      job: w.lost ? null : w.job,
      lastSeen: new Date(w.lastSeenMs).toISOString(),
      silentMs: Math.max(0, live.nowMs - w.lastSeenMs),
      completed: answered.get(w.worker)?.completed ?? 0,
      failed: answered.get(w.worker)?.failed ?? 0,
      capabilities: w.capabilities,
      cache: w.cache ? { ...w.cache, limitBytes: w.cache.limitBytes || null } : null,
      transfers: w.lost ? [] : w.transfers.map(({ fromSeeders, ...t }) => ({ ...t, fromCoordinator: fromSeeders })),
    }))
    .sort((a, b) => a.id.localeCompare(b.id));
}

/** A study's status: its summary, workers, one page of trials, the tests. */
export function studyStatus(
  study: StudyRecord,
  trials: readonly JobRecord[],
  tests: readonly JobRecord[],
  page: { offset: number; limit: number },
  live?: LiveView,
): StudyStatus {
  const items = trials.slice(page.offset, page.offset + page.limit).map((t) => statusTrial(study, t));
  const end = page.offset + items.length;
  return {
    format: STATUS_FORMAT,
    version: STATUS_VERSION,
    at: new Date(live?.nowMs ?? Date.now()).toISOString(),
    summary: studySummary(study, trials, tests, live),
    workers: workerViews(trials, tests, live),
    trials: { total: trials.length, offset: page.offset, items, next: end < trials.length && page.limit > 0 ? end : null },
    tests: tests.map((t) => statusTrial(study, t)),
  };
}

/** The line of a study in a list. */
export function listItem(s: StudySummary): StudyListItem {
  return {
    study: s.study,
    live: s.live,
    state: s.state,
    phase: s.phase,
    direction: s.direction,
    metric: s.metric,
    trials: s.trials,
    progress: s.progress,
    eta: s.eta,
    updatedAt: s.updatedAt,
    best: s.best ? { trial: s.best.trial, objective: s.best.objective } : null,
  };
}
