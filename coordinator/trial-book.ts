import { better, type Direction, type JobKind, objectiveOf, type Result } from '../shared/index.js';
import type { StudyEvent, StudyPhase } from './events.js';
import type { TrialView } from './sampler/sampler.js';
import type { AttemptRecord, JobRecord, StudyFailure } from './store/records.js';

/** What the book needs to know of a study: its budget, lease policy and objective. */
export interface BookSettings {
  study: string;
  /** results of another generation (an earlier run of the same name) are stale */
  generation: number;
  budget: number;
  maxAttempts: number;
  trialTimeoutMs: number;
  direction: Direction;
  /** a trial's objective: the weighted mean over these sets */
  devSets: readonly { name: string; weight: number }[];
  /** the sets with a held-out test file; none: the study has no tests phase */
  testSets: readonly { name: string; weight: number }[];
  /** labels of the baseline trials, tested at the end beside the best */
  baselineLabels: ReadonlySet<string>;
  /** trials run alone until one completes; 0: none */
  canary: number;
  /** trials failing in a row with the same error that stop the study; 0: never */
  streak: number;
}

/** Failed with a bad score: a property of the weights (a diverged merge), not of the mesh. */
const WEIGHTS_FAULT = 'BAD_SCORE';

/** What the coordinator must do, in order, to carry out a transition. */
export type Effect =
  /** write these records (one batch) before acting on them */
  | { type: 'record'; jobs: JobRecord[] }
  /** delete a superseded attempt's proposal from the queue (best effort) */
  | { type: 'withdraw'; seq: number }
  /** publish the job's current attempt (idempotent per job and attempt) */
  | { type: 'publish'; job: JobRecord }
  /** the study is complete: record it */
  | { type: 'complete' }
  /** a failure that will repeat: record the study as failed and stop issuing work */
  | { type: 'fail'; failure: StudyFailure };

export interface Transition {
  effects: Effect[];
  /** to emit once the effects are carried out */
  events: StudyEvent[];
}

/** What became of a result. */
export type ResultDisposition = 'recorded' | 'failed' | 'reissued' | 'stale' | 'not-current';

export interface Progress {
  finished: number;
  total: number;
  running: number;
  best?: number;
  phase: StudyPhase;
}

const none = (): Transition => ({ effects: [], events: [] });

/**
 * The trial state machine of one study, with no I/O: created → running → complete | failed,
 * attempts, reissue on a retryable error or a timeout, the budget, the tests phase, and what the
 * sampler sees. Every method returns the effects (records to write, proposals to publish or
 * withdraw) and the events of the change; the coordinator carries them out in order. The book is
 * rebuilt from the record on start, so a restarted coordinator resumes where the record says.
 */
export class TrialBook {
  /** When the coordinator last saw an unstarted attempt's proposal waiting in the queue (by job). */
  private readonly seenWaiting = new Map<string, number>();

  private constructor(
    private readonly s: BookSettings,
    private readonly trials: JobRecord[],
    private tests: JobRecord[],
    private state: 'running' | 'complete' | 'failed',
    private readonly openedAt: number,
  ) {}

  /**
   * The book of a study from its record (trials and tests in number order). `openedAt`: when
   * this coordinator started; no attempt times out sooner than a full timeout after it, so
   * results published while the coordinator was down are read before anything expires.
   */
  static restore(
    settings: BookSettings,
    trials: JobRecord[],
    tests: JobRecord[],
    state: 'running' | 'complete' | 'failed' = 'running',
    openedAt = new Date(0),
  ): TrialBook {
    for (const [i, j] of [...trials, ...tests].entries()) {
      const list = i < trials.length ? 'trial' : 'test';
      const at = i < trials.length ? i : i - trials.length;
      if (j.number !== at)
        throw new Error(`study '${settings.study}': ${list} record #${at} has number ${j.number}; the record is not contiguous`);
    }
    // a study recorded complete whose budget has since grown has trials to run again
    const grown = state === 'complete' && trials.length < settings.budget;
    return new TrialBook(settings, trials, tests, grown ? 'running' : state, openedAt.getTime());
  }

  get phase(): StudyPhase {
    return this.state !== 'running' ? this.state : this.tests.length > 0 ? 'tests' : 'trials';
  }

  get budget(): number {
    return this.s.budget;
  }

  /** Whether the budget allows another trial. */
  get wantsTrial(): boolean {
    return this.state === 'running' && this.trials.length < this.s.budget;
  }

  /**
   * Whether a trial may be created now: the budget allows it, and the canary (the first trials,
   * run alone until one of them completes) is not still out. A fault that fails every trial then
   * costs the canary, not a queue full of proposals.
   */
  get mayCreateTrial(): boolean {
    if (!this.wantsTrial) return false;
    if (this.s.canary === 0 || this.canaryPassed) return true;
    return this.trials.filter((t) => t.state === 'running').length < this.s.canary;
  }

  get nextTrialNumber(): number {
    return this.trials.length;
  }

  get createdTrials(): number {
    return this.trials.length;
  }

  /** Jobs whose proposal was published and not answered yet: published again on a restart. */
  running(): JobRecord[] {
    return [...this.trials, ...this.tests].filter((j) => j.state === 'running');
  }

  /** What the sampler sees: every trial's state, weights and objective. */
  samplerView(): TrialView[] {
    return this.trials.map((t) => ({
      number: t.number,
      state: t.state,
      params: t.params,
      ...(t.value !== undefined ? { value: t.value } : {}),
    }));
  }

  best(): JobRecord | undefined {
    return this.trials
      .filter((t) => t.state === 'complete')
      .reduce<JobRecord | undefined>((b, t) => (!b || better(this.s.direction, t.value!, b.value!) ? t : b), undefined);
  }

  progress(): Progress {
    const best = this.best();
    return {
      finished: finished(this.trials) + finished(this.tests),
      total: this.s.budget + this.tests.length,
      running: this.running().length,
      ...(best ? { best: best.value! } : {}),
      phase: this.phase,
    };
  }

  /** A new trial with these weights, running from its first attempt. */
  create(label: string, params: Record<string, number>, now: Date): Transition {
    if (!this.wantsTrial) throw new Error(`study '${this.s.study}': the budget of ${this.s.budget} trials is spent`);
    const at = now.toISOString();
    const job: JobRecord = {
      kind: 'TRIAL',
      number: this.trials.length,
      label,
      params,
      state: 'running',
      attempt: 1,
      attempts: [{ attempt: 1, issuedAt: at }],
      createdAt: at,
    };
    this.trials.push(job);
    return {
      effects: [
        { type: 'record', jobs: [job] },
        { type: 'publish', job },
      ],
      events: [this.event('trial.created', job, { params })],
    };
  }

  /** The proposal of a job's attempt is in the queue at `seq` (kept to withdraw it later). */
  published(kind: JobKind, number: number, attempt: number, seq: number): Transition {
    const job = this.job(kind, number);
    const rec = job?.attempts.find((a) => a.attempt === attempt);
    if (!job || !rec || rec.seq === seq) return none();
    rec.seq = seq;
    return { effects: [{ type: 'record', jobs: [job] }], events: [] };
  }

  /** A worker said it took the current attempt of a running job. */
  started(kind: JobKind, number: number, attempt: number, worker: string, now: Date): Transition {
    const job = this.job(kind, number);
    if (job?.state !== 'running' || job.attempt !== attempt) return none();
    const rec = this.current(job);
    if (rec.worker === worker && rec.startedAt) return none();
    Object.assign(rec, { worker, startedAt: now.toISOString() });
    return { effects: [{ type: 'record', jobs: [job] }], events: [this.event('trial.started', job, { worker })] };
  }

  /**
   * Records a worker's result: only for the current attempt of a running job of this study's
   * generation (a duplicate or a superseded attempt's result changes nothing). A retryable error
   * issues the job again while attempts remain; a permanent one, or a non-finite objective,
   * fails it.
   */
  onResult(r: Result, now: Date): Transition & { disposition: ResultDisposition } {
    if (r.study !== this.s.study || r.generation !== this.s.generation) return { ...none(), disposition: 'stale' };
    const job = this.job(r.kind, r.trial);
    // `created` tells a re-created job (tests after a budget grew) from the one it replaced; 0: not sent
    const sameJob = r.created === 0 || r.created === Date.parse(job?.createdAt ?? '');
    if (job?.state !== 'running' || job.attempt !== r.attempt || !sameJob) return { ...none(), disposition: 'not-current' };
    const at = now.toISOString();
    const rec = this.current(job);
    Object.assign(rec, { worker: r.worker, finishedAt: at, timings: r.timings });
    if (r.error) {
      rec.outcome = 'error';
      rec.error = r.error;
      if (r.error.retryable && job.attempt < this.s.maxAttempts) {
        return { ...this.reissue(job, now, 'error', r.worker, r.error), disposition: 'reissued' };
      }
      this.fail(job, r.error.code, r.error.message, at);
      return {
        ...this.afterFailure(job, {
          effects: [{ type: 'record', jobs: [job] }],
          events: [this.event('trial.failed', job, { worker: r.worker, error: { code: r.error.code, message: r.error.message } })],
        }),
        disposition: 'failed',
      };
    }
    const sets = job.kind === 'TRIAL' ? this.s.devSets : this.s.testSets;
    const names = r.scores
      .map((s) => s.name)
      .sort()
      .join(',');
    const expected = sets
      .map((s) => s.name)
      .sort()
      .join(',');
    const value = names === expected ? objectiveOf(r.scores, sets) : NaN;
    Object.assign(job, { worker: r.worker, provider: r.provider, timings: r.timings, scores: r.scores });
    if (Number.isFinite(value)) {
      Object.assign(job, { state: 'complete', value, finishedAt: at });
      rec.outcome = 'complete';
      return {
        effects: [{ type: 'record', jobs: [job] }],
        events: [this.event('trial.completed', job, { worker: r.worker, value })],
        disposition: 'recorded',
      };
    }
    // a diverged merge (NaN/inf) or a malformed score list: a failed trial, ignored by the sampler
    const why = names === expected ? 'the objective is not a finite number' : `scores for [${names}], expected [${expected}]`;
    this.fail(job, WEIGHTS_FAULT, why, at);
    rec.outcome = 'failed';
    return {
      ...this.afterFailure(job, {
        effects: [{ type: 'record', jobs: [job] }],
        events: [this.event('trial.failed', job, { worker: r.worker, error: { code: WEIGHTS_FAULT, message: why } })],
      }),
      disposition: 'failed',
    };
  }

  /**
   * Running jobs unanswered past the timeout, to `expire` one at a time. The clock of an attempt
   * runs from its (latest) start on a worker; one no worker has started yet runs from its issue
   * or from when it was last seen waiting in the queue (`waiting`), so time spent behind other
   * proposals is not counted against it. `started: false` jobs with a `seq` should be looked up
   * in the queue first: a proposal still there is waiting, not lost.
   */
  timedOut(now: Date): { kind: JobKind; number: number; started: boolean; seq?: number }[] {
    return this.running()
      .filter((job) => this.overdue(job, now))
      .map((job) => {
        const rec = this.current(job);
        return {
          kind: job.kind,
          number: job.number,
          started: rec.startedAt !== undefined,
          ...(rec.seq !== undefined ? { seq: rec.seq } : {}),
        };
      });
  }

  /** The coordinator saw the current attempt's proposal still in the queue: its clock starts again. */
  waiting(kind: JobKind, number: number, now: Date): void {
    const job = this.job(kind, number);
    if (job?.state === 'running' && !this.current(job).startedAt) this.seenWaiting.set(this.attemptKey(job), now.getTime());
  }

  private overdue(job: JobRecord, now: Date): boolean {
    const rec = this.current(job);
    const since = rec.startedAt
      ? Date.parse(rec.startedAt)
      : Math.max(Date.parse(rec.issuedAt), this.seenWaiting.get(this.attemptKey(job)) ?? 0);
    return now.getTime() - Math.max(since, this.openedAt) >= this.s.trialTimeoutMs;
  }

  private attemptKey(job: JobRecord): string {
    return `${job.kind}:${job.number}:${job.attempt}:${job.createdAt}`;
  }

  /**
   * A job unanswered past the timeout is issued again, or failed after the last attempt (its
   * proposal withdrawn, so a dead worker's lease does not hand it to another). One job per
   * transition: if carrying one out fails, the others are still as the record says.
   */
  expire(kind: JobKind, number: number, now: Date): Transition {
    const job = this.job(kind, number);
    if (job?.state !== 'running') return none();
    const rec = this.current(job);
    if (!this.overdue(job, now)) return none();
    rec.outcome = 'superseded';
    if (job.attempt < this.s.maxAttempts) return this.reissue(job, now, 'timeout');
    const message = `no result after ${job.attempt} attempts of ${this.s.trialTimeoutMs / 1000} s`;
    this.fail(job, 'TIMEOUT', message, now.toISOString());
    return this.afterFailure(job, {
      effects: [{ type: 'record', jobs: [job] }, ...(rec.seq !== undefined ? [{ type: 'withdraw' as const, seq: rec.seq }] : [])],
      events: [this.event('trial.failed', job, { error: { code: 'TIMEOUT', message } })],
    });
  }

  /**
   * Resuming a study that stopped as failed: the failed trials of its streak run again (same
   * weights, a new job record, attempts from 1), so the fault they hit does not cost budget.
   * Trials still running at the stop are renewed too: results of their attempts from before the
   * fix, still in the results stream, then no longer match them. Call it once per resume.
   */
  renew(failed: readonly number[], now: Date): Transition {
    const at = now.toISOString();
    const streak = failed.map((n) => this.trials[n]).filter((j): j is JobRecord => j?.state === 'failed');
    const running = this.trials.filter((j) => j.state === 'running');
    const withdraw = running.flatMap((j) => {
      const seq = this.current(j).seq;
      return seq === undefined ? [] : [{ type: 'withdraw' as const, seq }];
    });
    const jobs = [...streak, ...running].sort((a, b) => a.number - b.number);
    for (const job of jobs) {
      const { attempts, error, createdAt, finishedAt } = job;
      job.retried = [...(job.retried ?? []), { attempts, ...(error ? { error } : {}), createdAt, ...(finishedAt ? { finishedAt } : {}) }];
      // a new createdAt: results of the earlier run's attempts no longer match this job
      const created = Math.max(now.getTime(), Date.parse(createdAt) + 1);
      Object.assign(job, {
        state: 'running',
        attempt: 1,
        attempts: [{ attempt: 1, issuedAt: at }],
        createdAt: new Date(created).toISOString(),
      });
      for (const k of ['error', 'finishedAt', 'value', 'scores', 'worker', 'provider', 'timings'] as const) delete job[k];
    }
    if (jobs.length === 0) return none();
    return {
      effects: [...withdraw, { type: 'record', jobs }, ...jobs.map((job) => ({ type: 'publish' as const, job }))],
      events: jobs.map((job) => this.event('trial.reissued', job, { reason: 'resume' })),
    };
  }

  /**
   * The trials failing in a row, most recent first, with the error they share: finished trials
   * in the order they finished, back to the last complete one. Once a trial has completed, a
   * diverged merge neither counts nor breaks the streak: it says nothing about the mesh.
   */
  failureStreak(): StudyFailure | undefined {
    const finishedTrials = this.trials
      .filter((t) => t.state !== 'running')
      .sort((a, b) => (a.finishedAt ?? '').localeCompare(b.finishedAt ?? '') || a.number - b.number);
    let streak: StudyFailure | undefined;
    for (const t of finishedTrials.reverse()) {
      if (t.state === 'complete') break;
      const error = t.error ?? { code: 'UNKNOWN', message: 'failed' };
      if (this.canaryPassed && error.code === WEIGHTS_FAULT) continue;
      if (!streak) streak = { code: error.code, message: error.message, trials: [], at: t.finishedAt ?? '' };
      else if (error.code !== streak.code) break;
      streak.trials.push(t.number);
    }
    return streak;
  }

  /** A trial has completed: the canary is over (whatever `canary` is set to). */
  private get canaryPassed(): boolean {
    return this.trials.some((t) => t.state === 'complete');
  }

  /** After a trial failed: a streak long enough stops the study as failed. */
  private afterFailure(job: JobRecord, t: Transition): Transition {
    if (job.kind !== 'TRIAL' || this.state !== 'running') return t;
    const streak = this.failureStreak();
    const limit = this.s.canary > 0 && !this.canaryPassed ? Math.min(this.s.canary, this.s.budget) : this.s.streak;
    if (!streak || limit === 0 || streak.trials.length < limit) return t;
    this.state = 'failed';
    const failure = { ...streak, trials: [...streak.trials].sort((a, b) => a - b) };
    return {
      effects: [...t.effects, { type: 'fail', failure }],
      events: [...t.events, { type: 'phase', study: this.s.study, phase: 'failed' }],
    };
  }

  /**
   * After the last trial: the test jobs for the baselines and the best merge (when the study has
   * test sets and something to test); once they are answered, or when there is nothing to test,
   * the study is complete.
   */
  advance(now: Date): Transition {
    if (this.state !== 'running' || this.trials.length < this.s.budget || finished(this.trials) < this.trials.length) return none();
    if (this.s.testSets.length > 0 && this.tests.length === 0) {
      const jobs = this.testJobs(now);
      if (jobs.length > 0) {
        this.tests = jobs;
        return {
          effects: [{ type: 'record', jobs }, ...jobs.map((job) => ({ type: 'publish' as const, job }))],
          events: [
            { type: 'phase', study: this.s.study, phase: 'tests' },
            ...jobs.map((j) => this.event('trial.created', j, { params: j.params })),
          ],
        };
      }
    }
    if (finished(this.tests) < this.tests.length) return none();
    this.state = 'complete';
    return { effects: [{ type: 'complete' }], events: [{ type: 'phase', study: this.s.study, phase: 'complete' }] };
  }

  private testJobs(now: Date): JobRecord[] {
    const labels = this.s.baselineLabels;
    const pick = this.trials.filter((t) => t.state === 'complete' && labels.has(t.label));
    const best = this.best();
    const at = now.toISOString();
    return [...pick, ...(best && !labels.has(best.label) ? [best] : [])].map(
      (t, i): JobRecord => ({
        kind: 'TEST',
        number: i,
        label: labels.has(t.label) ? t.label : 'best',
        params: t.params,
        state: 'running',
        attempt: 1,
        attempts: [{ attempt: 1, issuedAt: at }],
        createdAt: at,
      }),
    );
  }

  /** A new attempt supersedes the current one; its proposal is withdrawn from the queue. */
  private reissue(
    job: JobRecord,
    now: Date,
    reason: 'error' | 'timeout',
    worker?: string,
    error?: { code: string; message: string },
  ): Transition {
    const old = this.current(job);
    job.attempt += 1;
    job.attempts.push({ attempt: job.attempt, issuedAt: now.toISOString() });
    return {
      effects: [
        ...(old.seq !== undefined ? [{ type: 'withdraw' as const, seq: old.seq }] : []),
        { type: 'record', jobs: [job] },
        { type: 'publish', job },
      ],
      events: [
        this.event('trial.reissued', job, {
          reason,
          ...(worker ? { worker } : {}),
          ...(error ? { error: { code: error.code, message: error.message } } : {}),
        }),
      ],
    };
  }

  private fail(job: JobRecord, code: string, message: string, at: string): void {
    Object.assign(job, { state: 'failed', error: { code, message }, finishedAt: at });
  }

  private job(kind: JobKind, number: number): JobRecord | undefined {
    return (kind === 'TRIAL' ? this.trials : this.tests)[number];
  }

  private current(job: JobRecord): AttemptRecord {
    return job.attempts.find((a) => a.attempt === job.attempt)!;
  }

  private event<T extends StudyEvent['type']>(
    type: T,
    job: JobRecord,
    extra: Omit<Extract<StudyEvent, { type: T }>, 'type' | 'study' | 'kind' | 'trial' | 'attempt' | 'label'>,
  ): StudyEvent {
    return {
      type,
      study: this.s.study,
      kind: job.kind,
      trial: job.number,
      attempt: job.attempt,
      label: job.label,
      ...extra,
    } as unknown as StudyEvent;
  }
}

function finished(jobs: readonly JobRecord[]): number {
  return jobs.filter((j) => j.state !== 'running').length;
}
