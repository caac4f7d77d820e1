import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AckPolicy,
  connect,
  DeliverPolicy,
  nanos,
  RetentionPolicy,
  StorageType,
  type ConsumerConfig,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  type NatsConnection,
  type StreamConfig,
} from 'nats';
import {
  announcementCodec,
  better,
  loadEvalSets,
  objectiveOf,
  type Logger,
  MANIFEST_FILE,
  OptimerError,
  Pool,
  proposalCodec,
  type Result,
  resultCodec,
  RESULTS_STREAM,
  resultsConsumer,
  Rng,
  seedFor,
  SHARDS_DIR,
  STUDIES_BUCKET,
  type StudyAnnouncement,
  subjects,
  TRIALS_STREAM,
  WORKERS_CONSUMER,
} from '../shared/index.js';
import { baselineMerges } from './baselines.js';
import { createSampler } from './sampler/create.js';
import type { Sampler, TrialView } from './sampler/sampler.js';
import type { SearchSpace } from './sampler/space.js';
import { Seeder } from './seeder.js';
import type { JobRecord, StudyRecord } from './store/records.js';
import type { StudyStore } from './store/study-store.js';
import { resolveVectors, type StudyConfig } from './study/config.js';

export interface CoordinatorOptions {
  config: StudyConfig;
  store: StudyStore;
  natsUrl: string;
  /** forget the study's earlier trials and start over */
  fresh?: boolean;
  /** where the shard seeder listens, and the host it tells workers to use */
  grpcHost?: string;
  advertiseHost?: string;
  log: Logger;
  /** how long one wait for results lasts, ms */
  pollMs?: number;
  /** proposals kept waiting in the queue beyond those idle workers ask for */
  queueDepth?: number;
  onProgress?: (p: Progress) => void;
}

export interface Progress {
  finished: number;
  total: number;
  running: number;
  best?: number;
  phase: 'trials' | 'tests' | 'complete';
}

const MAX_RESULT_BATCH = 16;

/**
 * Runs one study: proposes trials (baselines first, then the sampler), publishes them to the
 * JetStream work queue, records results exactly once in LevelDB, serves the pool's shards, and
 * at the end has the test sets evaluated for the best merge and the baselines.
 *
 * Everything is decided from the record: each change is written before it is acted on, so a
 * coordinator killed at any point resumes, on restart, exactly where the record says. Proposals
 * are published with a message id per (trial, attempt), so re-publishing after a crash is
 * de-duplicated by JetStream; results are matched by trial and attempt, so a duplicate or a
 * superseded attempt's result is logged and dropped.
 */
export class Coordinator {
  private closing = false;
  private loop: Promise<void> | undefined;
  private closePromise: Promise<void> | undefined;
  private trials: JobRecord[] = [];
  private tests: JobRecord[] = [];
  private readonly sampler: Sampler;
  private readonly space: SearchSpace;
  private readonly log: Logger;
  private readonly pollMs: number;
  private readonly queueDepth: number;

  private constructor(
    private readonly opts: CoordinatorOptions,
    private study: StudyRecord,
    private readonly pool: Pool,
    private readonly seeder: Seeder,
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly testSets: boolean,
  ) {
    const c = opts.config;
    this.log = opts.log.child({ study: c.name });
    this.pollMs = opts.pollMs ?? 100;
    this.queueDepth = opts.queueDepth ?? 1;
    this.space = {
      params: Object.fromEntries(
        study.vectors.map((v) => [v, { type: 'float' as const, low: study.bounds[v]![0], high: study.bounds[v]![1] }]),
      ),
    };
    this.sampler = createSampler(c.sampler);
  }

  get name(): string {
    return this.study.name;
  }

  static async start(opts: CoordinatorOptions): Promise<Coordinator> {
    const c = opts.config;
    const log = opts.log.child({ study: c.name });
    const pool = await Pool.open(c.pool);
    const cleanup: (() => Promise<unknown>)[] = [() => pool.close()];
    try {
      const { vectors, bounds } = resolveVectors(
        c,
        pool.manifest.vectors.map((v) => v.name),
        `study '${c.name}'`,
      );
      // refuse bad evaluation sets here, before any worker spends time on them
      await loadEvalSets(
        c.objective.sets.map((s) => ({ name: s.name, path: s.path, weight: s.weight, metric: s.metric })),
        pool.manifest.model,
      );
      const testSpecs = c.objective.sets
        .filter((s) => s.test)
        .map((s) => ({ name: s.name, path: s.test!, weight: s.weight, metric: s.metric }));
      if (testSpecs.length > 0) await loadEvalSets(testSpecs, pool.manifest.model);

      const study = await prepareStudy(opts, vectors, bounds, log);

      const seeder = new Seeder(log);
      cleanup.push(() => seeder.close());
      const manifestPath = join(c.pool, MANIFEST_FILE);
      const manifestRef = await blobOf(manifestPath);
      seeder.register(manifestRef.sha256, manifestPath);
      for (const s of pool.allShards()) seeder.register(s.sha256, join(c.pool, SHARDS_DIR, s.sha256));
      const sets: StudyAnnouncement['sets'] = [];
      for (const s of c.objective.sets) {
        const dev = await blobOf(s.path);
        seeder.register(dev.sha256, s.path);
        const test = s.test ? await blobOf(s.test) : { sha256: '', bytes: 0 };
        if (s.test) seeder.register(test.sha256, s.test);
        sets.push({ name: s.name, metric: s.metric, weight: s.weight, dev, test });
      }
      const address = await seeder.start(opts.grpcHost ?? '127.0.0.1', 0, opts.advertiseHost);
      log.info({ seeder: address }, 'serving shards');

      let nc: NatsConnection;
      try {
        nc = await connect({
          servers: opts.natsUrl,
          name: `optimer-coordinator-${c.name}`,
          maxReconnectAttempts: -1,
          reconnectTimeWait: 250,
        });
      } catch (e) {
        throw new OptimerError('TRANSPORT', `cannot connect to NATS at ${opts.natsUrl}: ${(e as Error).message}`, {
          cause: e,
          retryable: true,
        });
      }
      cleanup.push(() => nc.close());
      const jsm = await nc.jetstreamManager();
      const js = nc.jetstream();
      await ensureStream(jsm, {
        name: TRIALS_STREAM,
        subjects: [subjects.allTrials],
        retention: RetentionPolicy.Workqueue,
        storage: StorageType.File,
        duplicate_window: nanos(120_000),
      });
      await ensureStream(jsm, {
        name: RESULTS_STREAM,
        subjects: [subjects.allResults],
        retention: RetentionPolicy.Limits,
        storage: StorageType.File,
        duplicate_window: nanos(120_000),
        max_age: nanos(30 * 24 * 3600 * 1000),
      });
      await ensureConsumer(jsm, TRIALS_STREAM, {
        durable_name: WORKERS_CONSUMER,
        ack_policy: AckPolicy.Explicit,
        ack_wait: nanos(c.lease.ackWaitSeconds * 1000),
        max_deliver: -1, // the coordinator's attempts and timeouts bound the work, not JetStream
        filter_subject: subjects.allTrials,
      });
      if (opts.fresh) {
        await jsm.streams.purge(TRIALS_STREAM, { filter: subjects.trials(c.name) });
        await jsm.streams.purge(RESULTS_STREAM, { filter: subjects.results(c.name) });
      }
      await ensureConsumer(jsm, RESULTS_STREAM, {
        durable_name: resultsConsumer(c.name),
        ack_policy: AckPolicy.Explicit,
        // short: results a crashed coordinator had fetched come back soon; a repeat is dropped anyway
        ack_wait: nanos(10_000),
        deliver_policy: DeliverPolicy.All,
        filter_subject: subjects.results(c.name),
      });
      const kv = await js.views.kv(STUDIES_BUCKET, { history: 1 });
      const ann: StudyAnnouncement = {
        study: c.name,
        direction: c.objective.direction,
        manifest: manifestRef,
        sets,
        seeders: [address],
        provider: c.execution.provider ?? '',
        batchTokens: c.execution.batchTokens,
        generation: study.generation,
      };
      await kv.put(c.name, announcementCodec.encode(ann));

      const coord = new Coordinator(opts, study, pool, seeder, nc, js, jsm, testSpecs.length > 0);
      await coord.recover();
      coord.loop = coord.run();
      return coord;
    } catch (e) {
      for (const f of cleanup.reverse()) await f().catch(() => undefined);
      throw e;
    }
  }

  /** Resolves when the study is complete (or the coordinator was closed first). */
  async done(): Promise<void> {
    await this.loop;
  }

  get complete(): boolean {
    return this.study.state === 'complete';
  }

  /** Stops proposing and recording; the record stays consistent and the study resumable. */
  close(): Promise<void> {
    this.closePromise ??= (async () => {
      this.closing = true;
      await this.loop?.catch(() => undefined);
      await this.seeder.close();
      await this.nc.drain().catch(() => undefined);
      await this.pool.close();
    })();
    return this.closePromise;
  }

  // ---- state ----------------------------------------------------------------------------------

  private async recover(): Promise<void> {
    const store = this.opts.store;
    this.trials = await store.listJobs(this.name, 'TRIAL');
    this.tests = await store.listJobs(this.name, 'TEST');
    // anything running was published before the stop: publish again under the same message id
    // (JetStream drops the copy if the original is still within its duplicate window)
    for (const job of [...this.trials, ...this.tests]) if (job.state === 'running') await this.publish(job);
    const running = this.trials.filter((t) => t.state === 'running').length;
    this.log.info({ trials: this.trials.length, running, budget: this.budget }, this.trials.length > 0 ? 'resuming' : 'starting');
  }

  private get budget(): number {
    return this.opts.config.trials;
  }

  private finished(jobs: JobRecord[]): number {
    return jobs.filter((j) => j.state !== 'running').length;
  }

  private async run(): Promise<void> {
    const consumer = await this.js.consumers.get(RESULTS_STREAM, resultsConsumer(this.name));
    const messages = await consumer.consume({ max_messages: MAX_RESULT_BATCH });
    // results and the periodic tick both change state: one at a time, in arrival order
    const results = (async () => {
      for await (const m of messages) {
        if (this.closing) break;
        await this.serial(async () => {
          await this.onResult(m);
          await this.tick();
        });
        if (this.study.state === 'complete') break;
      }
    })();
    try {
      while (!this.closing && this.study.state !== 'complete') {
        await this.serial(() => this.tick());
        await sleep(this.pollMs);
      }
    } finally {
      messages.stop();
      await results.catch((e: unknown) => this.log.warn({ err: (e as Error).message }, 'results consumer stopped'));
    }
  }

  private chain: Promise<void> = Promise.resolve();
  private serial(fn: () => Promise<void>): Promise<void> {
    const p = this.chain.then(fn);
    this.chain = p.catch(() => undefined);
    return p;
  }

  /** Time-outs, new proposals, and the move to tests and completion; never throws. */
  private async tick(): Promise<void> {
    if (this.closing || this.study.state === 'complete') return;
    try {
      await this.supersedeStale();
      await this.topUp();
      await this.advance();
    } catch (e) {
      if (!this.closing) this.log.warn({ err: (e as Error).message }, 'coordinator: will retry');
    }
  }

  /** Issues new trials while idle workers wait and the budget allows. */
  private async topUp(): Promise<void> {
    if (this.trials.length >= this.budget) return;
    const info = await this.jsm.consumers.info(TRIALS_STREAM, WORKERS_CONSUMER);
    let pending = info.num_pending;
    const want = Math.max(this.queueDepth, info.num_waiting);
    while (pending < want && this.trials.length < this.budget && !this.closing) {
      await this.createTrial();
      pending++;
    }
  }

  private async createTrial(): Promise<void> {
    const number = this.trials.length;
    const c = this.opts.config;
    const baselines = this.baselines();
    let label: string;
    let params: Record<string, number>;
    if (number < baselines.length) {
      label = baselines[number]!.label;
      params = Object.fromEntries(this.study.vectors.map((v) => [v, baselines[number]!.weights.get(v) ?? 0]));
    } else {
      label = this.sampler.name;
      const views: TrialView[] = this.trials.map((t) => ({
        number: t.number,
        state: t.state,
        params: t.params,
        ...(t.value !== undefined ? { value: t.value } : {}),
      }));
      // a random stream per trial number: the same record always gives the same proposal
      const proposed = this.sampler.propose(this.space, views, c.objective.direction, new Rng(seedFor(c.sampler.seed, number)));
      params = Object.fromEntries(this.study.vectors.map((v) => [v, proposed[v] as number])); // merge weights: float params
    }
    const now = new Date().toISOString();
    const job: JobRecord = {
      kind: 'TRIAL',
      number,
      label,
      params,
      state: 'running',
      attempt: 1,
      attempts: [{ attempt: 1, issuedAt: now }],
      createdAt: now,
    };
    this.trials.push(job);
    await this.opts.store.putJob(this.name, job);
    await this.publish(job);
  }

  private baselines() {
    const kinds = this.opts.config.baselines;
    return baselineMerges(this.study.vectors).filter((b) =>
      b.label === 'base' ? kinds.includes('base') : b.label === 'average' ? kinds.includes('average') : kinds.includes('single'),
    );
  }

  /** Publishes a job's current attempt; the message id makes a repeat a no-op. */
  private async publish(job: JobRecord): Promise<void> {
    const p = {
      study: this.name,
      generation: this.study.generation,
      kind: job.kind,
      trial: job.number,
      label: job.label,
      attempt: job.attempt,
      weights: job.params,
    };
    // unique per job record and attempt (tests are re-created when a budget grows), stable across re-publishing
    const msgID = `${this.name}.${this.study.generation}.${job.kind}.${job.number}.${job.attempt}.${Date.parse(job.createdAt)}`;
    for (let i = 0; ; i++) {
      try {
        const ack = await this.js.publish(subjects.trials(this.name), proposalCodec.encode(p), { msgID, timeout: 5000 });
        const rec = job.attempts.find((a) => a.attempt === job.attempt);
        if (rec && !ack.duplicate) {
          rec.seq = ack.seq;
          await this.opts.store.putJob(this.name, job);
        }
        return;
      } catch (e) {
        if (i >= 20 || this.closing) throw e;
        await sleep(Math.min(2000, 100 * 2 ** i)); // NATS restarting: publishes are not buffered
      }
    }
  }

  private async onResult(m: JsMsg): Promise<void> {
    let r: Result;
    try {
      r = resultCodec.decode(m.data, `result ${m.subject}#${m.seq}`);
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'dropping a malformed result');
      m.term();
      return;
    }
    if (r.study !== this.name || r.generation !== this.study.generation) {
      this.log.info({ generation: r.generation, trial: r.trial }, 'dropping a result of an earlier run of the study');
      m.ack();
      return;
    }
    const jobs = r.kind === 'TRIAL' ? this.trials : this.tests;
    const job = jobs[r.trial];
    if (job?.state !== 'running' || job.attempt !== r.attempt) {
      this.log.info(
        { kind: r.kind, trial: r.trial, attempt: r.attempt, worker: r.worker, state: job?.state, current: job?.attempt },
        'dropping a result for an attempt that is no longer current',
      );
      m.ack();
      return;
    }
    const now = new Date().toISOString();
    const rec = job.attempts.find((a) => a.attempt === r.attempt)!;
    Object.assign(rec, { worker: r.worker, finishedAt: now, timings: r.timings });
    const sets = this.expectedSets(job.kind);
    if (r.error) {
      rec.outcome = 'error';
      rec.error = r.error;
      if (r.error.retryable && job.attempt < this.opts.config.lease.maxAttempts) {
        this.log.warn({ trial: job.number, worker: r.worker, err: r.error.message }, 'attempt failed; issuing the trial again');
        await this.reissue(job);
      } else {
        this.fail(job, r.error.code, r.error.message, now);
        this.log.warn({ trial: job.number, worker: r.worker, err: r.error.message }, 'trial failed');
        await this.opts.store.putJob(this.name, job);
      }
      m.ack();
      return;
    }
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
      Object.assign(job, { state: 'complete', value, finishedAt: now });
      rec.outcome = 'complete';
    } else {
      // a diverged merge (NaN/inf) or a malformed score list: a failed trial, ignored by the sampler
      const why = names === expected ? 'the objective is not a finite number' : `scores for [${names}], expected [${expected}]`;
      this.fail(job, 'BAD_SCORE', why, now);
      rec.outcome = 'failed';
    }
    await this.opts.store.putJob(this.name, job);
    m.ack();
    this.progress();
  }

  private fail(job: JobRecord, code: string, message: string, now: string): void {
    Object.assign(job, { state: 'failed', error: { code, message }, finishedAt: now });
  }

  private expectedSets(kind: JobRecord['kind']): { name: string; weight: number }[] {
    const sets = this.opts.config.objective.sets;
    return (kind === 'TRIAL' ? sets : sets.filter((s) => s.test)).map((s) => ({ name: s.name, weight: s.weight }));
  }

  /** A new attempt supersedes the current one; its proposal is withdrawn from the queue. */
  private async reissue(job: JobRecord): Promise<void> {
    const old = job.attempts.find((a) => a.attempt === job.attempt);
    if (old?.seq !== undefined) await this.jsm.streams.deleteMessage(TRIALS_STREAM, old.seq, false).catch(() => false);
    job.attempt += 1;
    job.attempts.push({ attempt: job.attempt, issuedAt: new Date().toISOString() });
    await this.opts.store.putJob(this.name, job);
    await this.publish(job);
  }

  /** Trials unanswered past the timeout are issued again (or failed after the last attempt). */
  private async supersedeStale(): Promise<void> {
    const timeoutMs = this.opts.config.lease.trialTimeoutSeconds * 1000;
    const now = Date.now();
    for (const job of [...this.trials, ...this.tests]) {
      if (job.state !== 'running') continue;
      const rec = job.attempts.find((a) => a.attempt === job.attempt)!;
      if (now - Date.parse(rec.issuedAt) < timeoutMs) continue;
      rec.outcome = 'superseded';
      if (job.attempt < this.opts.config.lease.maxAttempts) {
        this.log.warn({ kind: job.kind, trial: job.number, attempt: job.attempt }, 'no result in time; issuing again');
        await this.reissue(job);
      } else {
        this.fail(job, 'TIMEOUT', `no result after ${job.attempt} attempts of ${timeoutMs / 1000} s`, new Date(now).toISOString());
        await this.opts.store.putJob(this.name, job);
      }
    }
  }

  /** After the last trial: the test sets for the baselines and the best merge; then complete. */
  private async advance(): Promise<void> {
    if (this.trials.length < this.budget || this.finished(this.trials) < this.budget) return;
    if (this.testSets && this.tests.length === 0) {
      const labels = new Set(this.baselines().map((b) => b.label));
      const pick = this.trials.filter((t) => t.state === 'complete' && labels.has(t.label));
      const best = this.bestTrial();
      const now = new Date().toISOString();
      const jobs = [...pick, ...(best && !labels.has(best.label) ? [best] : [])].map(
        (t, i): JobRecord => ({
          kind: 'TEST',
          number: i,
          label: t === best && !labels.has(t.label) ? 'best' : t.label,
          params: t.params,
          state: 'running',
          attempt: 1,
          attempts: [{ attempt: 1, issuedAt: now }],
          createdAt: now,
        }),
      );
      for (const j of jobs) await this.opts.store.putJob(this.name, j);
      this.tests = jobs;
      for (const j of jobs) await this.publish(j);
      this.progress();
      return;
    }
    if (this.finished(this.tests) < this.tests.length) return;
    this.study = { ...this.study, state: 'complete', updatedAt: new Date().toISOString() };
    await this.opts.store.putStudy(this.study);
    this.log.info({ best: this.bestTrial()?.value }, 'study complete');
    this.progress();
  }

  private bestTrial(): JobRecord | undefined {
    const dir = this.opts.config.objective.direction;
    return this.trials
      .filter((t) => t.state === 'complete')
      .reduce<JobRecord | undefined>((b, t) => (!b || better(dir, t.value!, b.value!) ? t : b), undefined);
  }

  private progress(): void {
    const inTests = this.tests.length > 0;
    const best = this.bestTrial();
    this.opts.onProgress?.({
      finished: this.finished(this.trials) + this.finished(this.tests),
      total: this.budget + this.tests.length,
      running: [...this.trials, ...this.tests].filter((t) => t.state === 'running').length,
      ...(best ? { best: best.value! } : {}),
      phase: this.study.state === 'complete' ? 'complete' : inTests ? 'tests' : 'trials',
    });
  }
}

/** Loads or creates the study record; --fresh starts a new generation with no trials. */
async function prepareStudy(
  opts: CoordinatorOptions,
  vectors: string[],
  bounds: Record<string, [number, number]>,
  log: Logger,
): Promise<StudyRecord> {
  const { store, config: c } = opts;
  const now = new Date().toISOString();
  const old = await store.getStudy(c.name);
  if (!old || opts.fresh) {
    if (old) {
      log.info('--fresh: forgetting the earlier trials');
      await store.clearJobs(c.name);
    }
    const study: StudyRecord = {
      name: c.name,
      config: c,
      generation: (old?.generation ?? 0) + 1,
      state: 'running',
      vectors,
      bounds,
      createdAt: now,
      updatedAt: now,
    };
    await store.putStudy(study);
    return study;
  }
  const changed = firstDifference(withoutKeys(old.config, ['trials', 'lease']), withoutKeys(c, ['trials', 'lease']));
  if (changed) {
    throw new OptimerError(
      'BAD_CONFIG',
      `study '${c.name}' exists with a different ${changed}; run with --fresh to start it over, or give the study another name`,
    );
  }
  const grew = c.trials > old.config.trials;
  if (grew) await store.clearJobs(c.name, 'TEST'); // the best may change: test again at the end
  const study: StudyRecord = { ...old, config: c, state: grew || old.state === 'running' ? 'running' : old.state, updatedAt: now };
  await store.putStudy(study);
  return study;
}

function withoutKeys<T extends object>(o: T, keys: string[]): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([k]) => !keys.includes(k)));
}

/** The dotted path of the first field that differs between two JSON values, if any. */
function firstDifference(a: unknown, b: unknown, path = ''): string | undefined {
  if (JSON.stringify(a) === JSON.stringify(b)) return undefined;
  if (a && b && typeof a === 'object' && typeof b === 'object' && !Array.isArray(a) && !Array.isArray(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    for (const k of keys) {
      const d = firstDifference((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], path ? `${path}.${k}` : k);
      if (d) return d;
    }
  }
  return path || 'config';
}

async function blobOf(path: string): Promise<{ sha256: string; bytes: number }> {
  const data = await readFile(path);
  return { sha256: createHash('sha256').update(data).digest('hex'), bytes: data.length };
}

async function ensureStream(jsm: JetStreamManager, cfg: Partial<StreamConfig> & { name: string }): Promise<void> {
  try {
    await jsm.streams.info(cfg.name);
    await jsm.streams.update(cfg.name, cfg);
  } catch (e) {
    if (!/not found/i.test((e as Error).message)) throw e;
    await jsm.streams.add(cfg);
  }
}

async function ensureConsumer(
  jsm: JetStreamManager,
  stream: string,
  cfg: Partial<ConsumerConfig> & { durable_name: string },
): Promise<void> {
  try {
    await jsm.consumers.info(stream, cfg.durable_name);
    const { durable_name: _d, deliver_policy: _p, filter_subject: _f, ...updatable } = cfg;
    await jsm.consumers.update(stream, cfg.durable_name, updatable);
  } catch (e) {
    if (!/not found/i.test((e as Error).message)) throw e;
    await jsm.consumers.add(stream, cfg);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
