import { join } from 'node:path';
import type { JsMsg } from 'nats';
import {
  DEFAULT_QUEUE_DEPTH,
  DEFAULT_TICK_MS,
  type Genome,
  hashFile,
  type Logger,
  loadEvalSets,
  MANIFEST_FILE,
  OptimerError,
  perVectorGenome,
  Pool,
  type Proposal,
  type Result,
  Rng,
  resultCodec,
  runAll,
  SHARDS_DIR,
  Seeder,
  type ServedCounters,
  type StudyAnnouncement,
  seedFor,
  sleep,
  workerStatusCodec,
} from '../shared/index.js';
import { baselineParams } from './baselines.js';
import { type StudyEvent, type StudyEventListener, StudyEvents } from './events.js';
import { genomeSpace, proposalParams } from './genome-space.js';
import { probeSeeder } from './preflight.js';
import { createSampler } from './sampler/create.js';
import type { Sampler } from './sampler/sampler.js';
import type { SearchSpace } from './sampler/space.js';
import type { JobRecord, StudyFailure, StudyRecord } from './store/records.js';
import type { StudyStore } from './store/store.js';
import { resolveVectors, type StudyConfig } from './study/config.js';
import { prepareStudy } from './study/prepare.js';
import { LiveStatus } from './status/live-status.js';
import { StatusService } from './status/status-service.js';
import { type Progress, type Transition, TrialBook } from './trial-book.js';
import { attemptToken, holdsAttempt } from './attempt-token.js';
import { StudyTransport } from './transport.js';
import { WorkerTracker } from './worker-tracker.js';

export interface CoordinatorOptions {
  config: StudyConfig;
  store: StudyStore;
  natsUrl: string;
  /** forget the study's earlier trials and start over */
  fresh?: boolean;
  /** where the shard seeder listens, and the host it tells workers to use */
  grpcHost?: string;
  advertiseHost?: string;
  /** copies JetStream keeps of optimer's streams and buckets: 3 on a three-node cluster (default 1) */
  natsReplicas?: number;
  log: Logger;
  /** how often timeouts and idle workers are checked, ms */
  pollMs?: number;
  /** proposals kept waiting in the queue beyond those idle workers ask for */
  queueDepth?: number;
  /** a first subscriber to the study's events, attached before anything happens */
  onEvent?: StudyEventListener;
  /** told when the study is locked by another coordinator and this one waits for it to expire */
  onLockWait?: (message: string) => void;
}

/**
 * Runs one study: a thin loop of record → book → transport. The trial book decides (which trial
 * next, what a result or a timeout means, when the tests phase starts and the study ends); the
 * coordinator writes what the book changed to the record first, then acts on NATS, then emits
 * the events. It also serves the pool's shards and asks the sampler for proposals.
 *
 * A coordinator killed at any point resumes, on restart, exactly where the record says:
 * proposals are published with a message id per (trial, attempt), so re-publishing is
 * de-duplicated by JetStream; results are matched by trial and attempt.
 */
export class Coordinator {
  readonly events: StudyEvents;
  /** why the coordinator stopped on its own (the record could not be written) */
  private failure: Error | undefined;
  /** aborted by close(): stops the loop's sleep and any publish retries */
  private readonly abort = new AbortController();
  private loop: Promise<void> | undefined;
  private closePromise: Promise<void> | undefined;
  private readonly sampler: Sampler;
  private readonly genome: Genome;
  private readonly space: SearchSpace;
  private readonly log: Logger;
  private readonly tracker = new WorkerTracker();
  private chain: Promise<void> = Promise.resolve();
  /** running jobs whose proposal could not be published yet */
  private readonly unpublished = new Set<JobRecord>();
  /** answers `optimer study status` over NATS */
  private statusService: StatusService | undefined;
  /** the study's status from its record and the mesh now: for a dashboard */
  readonly status: LiveStatus;

  private constructor(
    private readonly opts: CoordinatorOptions,
    private study: StudyRecord,
    private readonly book: TrialBook,
    private readonly pool: Pool,
    private readonly seeder: Seeder,
    private readonly transport: StudyTransport,
  ) {
    this.log = opts.log.child({ study: study.name });
    this.events = new StudyEvents((e, event) =>
      this.log.warn({ err: (e as Error).message, event: event.type }, 'a study event listener failed'),
    );
    if (opts.onEvent) this.events.subscribe(opts.onEvent);
    this.genome = perVectorGenome(study.vectors);
    this.space = genomeSpace(this.genome, study.bounds);
    this.sampler = createSampler(opts.config.sampler);
    this.status = new LiveStatus(study.name, opts.store, () => this.tracker.list());
  }

  private get closing(): boolean {
    return this.abort.signal.aborted;
  }

  /** Signs the attempts' tokens (see attempt-token.ts); prepareStudy gives every record one. */
  private get secret(): string {
    const s = this.study.leaseSecret;
    if (!s) throw new Error(`study '${this.study.name}': the record has no lease secret`);
    return s;
  }

  get name(): string {
    return this.study.name;
  }

  static async start(opts: CoordinatorOptions): Promise<Coordinator> {
    const c = opts.config;
    const log = opts.log.child({ study: c.name });
    const pool = await Pool.open(c.pool);
    const cleanup: (() => unknown)[] = [() => pool.close()];
    try {
      await pool.checkSizes(); // a missing or truncated shard would fail every trial
      const { vectors, bounds } = resolveVectors(
        c,
        pool.manifest.vectors.map((v) => v.name),
        `study '${c.name}'`,
      );
      // refuse bad evaluation sets here, before any worker spends time on them
      await loadEvalSets(
        c.objective.sets.map((s) => ({ name: s.name, path: s.path, weight: s.weight, metric: s.metric })),
        pool.evalSetContext(),
      );
      const testSpecs = c.objective.sets
        .filter((s) => s.test)
        .map((s) => ({ name: s.name, path: s.test!, weight: s.weight, metric: s.metric }));
      if (testSpecs.length > 0) await loadEvalSets(testSpecs, pool.evalSetContext());

      const study = await prepareStudy(opts.store, c, { fresh: opts.fresh ?? false, vectors, bounds, log });

      const seeder = new Seeder(log);
      cleanup.push(() => seeder.close());
      const manifestPath = join(c.pool, MANIFEST_FILE);
      const manifestRef = await hashFile(manifestPath);
      seeder.register(manifestRef.sha256, manifestPath);
      for (const s of pool.allShards()) seeder.register(s.sha256, join(c.pool, SHARDS_DIR, s.sha256));
      const sets: StudyAnnouncement['sets'] = [];
      for (const s of c.objective.sets) {
        const dev = await hashFile(s.path);
        seeder.register(dev.sha256, s.path);
        const test = s.test ? await hashFile(s.test) : { sha256: '', bytes: 0 };
        if (s.test) seeder.register(test.sha256, s.test);
        sets.push({ name: s.name, metric: s.metric, weight: s.weight, dev, test });
      }
      const address = await seeder.start(opts.grpcHost ?? '127.0.0.1', 0, opts.advertiseHost);
      await probeSeeder(address, manifestRef);
      log.info({ seeder: address }, 'serving shards');

      const transport = await StudyTransport.open({
        natsUrl: opts.natsUrl,
        study: c.name,
        ackWaitSeconds: c.lease.ackWaitSeconds,
        fresh: opts.fresh ?? false,
        ...(opts.natsReplicas ? { replicas: opts.natsReplicas } : {}),
        lock: {
          onWait: (m) => {
            log.warn(m);
            opts.onLockWait?.(m);
          },
          onLost: (e) => log.error({ err: e.message }, 'coordinator: could not refresh the study lock'),
        },
      });
      cleanup.push(() => transport.close());
      const book = TrialBook.restore(
        bookSettings(study, c),
        await opts.store.listJobs(c.name, 'TRIAL'),
        await opts.store.listJobs(c.name, 'TEST'),
        study.state,
        new Date(),
      );
      // a complete study (a rerun to read its report) is not offered to workers
      if (book.phase === 'complete') await transport.withdrawAnnouncement();
      else {
        await transport.announce({
          study: c.name,
          direction: c.objective.direction,
          manifest: manifestRef,
          sets,
          seeders: [address],
          provider: c.execution.provider ?? '',
          batchTokens: c.execution.batchTokens,
          generation: study.generation,
          requirements: c.requirements ? { provider: c.requirements.provider ?? '', minMemoryGb: c.requirements.minMemoryGb ?? 0 } : null,
          priority: c.priority ?? 1,
          department: c.department ?? '',
        });
      }
      const coord = new Coordinator(opts, study, book, pool, seeder, transport);
      coord.statusService = await StatusService.start({ natsUrl: opts.natsUrl, status: coord.status, log });
      cleanup.push(() => coord.statusService?.close());
      await coord.recover();
      coord.loop = coord.run();
      return coord;
    } catch (e) {
      await runAll(cleanup.reverse());
      throw e;
    }
  }

  /**
   * Resolves when the study is complete (or the coordinator was closed first); rejects with
   * STUDY_FAILED when it stopped on a failure that repeats.
   */
  async done(): Promise<void> {
    await this.loop;
    if (this.failure) throw this.failure;
    const f = this.study.failure;
    if (this.study.state === 'failed' && f) throw studyFailedError(this.name, f);
  }

  /** What the coordinator's seeder has served: bytes, requests, each range's count. */
  served(): ServedCounters {
    return this.seeder.served();
  }

  get complete(): boolean {
    return this.study.state === 'complete';
  }

  /** Complete or failed: the coordinator issues no more work. */
  private get stopped(): boolean {
    return this.study.state !== 'running';
  }

  /** Where the study stands: finished and total jobs of the current phase, running, best. */
  progress(): Progress {
    return this.book.progress();
  }

  /** Stops proposing and recording; the record stays consistent and the study resumable. */
  close(): Promise<void> {
    this.closePromise ??= (async () => {
      this.abort.abort();
      await runAll(
        [
          () => this.loop,
          () => this.statusService?.close(),
          () => this.seeder.close(),
          () => this.transport.close(),
          () => this.pool.close(),
        ],
        (e) => this.log.warn({ err: (e as Error).message }, 'coordinator: a close step failed'),
      );
    })();
    return this.closePromise;
  }

  // ---- the loop -------------------------------------------------------------------------------

  private async recover(): Promise<void> {
    const f = this.study.failure;
    if (f && this.study.state === 'running') {
      // a rerun of a study that stopped as failed: the trials of its streak run again, and those
      // running at the stop start over (their pending results come from before the fix)
      this.log.info({ code: f.code, trials: f.trials }, 'resuming a failed study: its failed trials run again');
      await this.apply(this.book.renew(f.trials, new Date()));
      const { failure: _, ...rest } = this.study;
      this.study = { ...rest, updatedAt: new Date().toISOString() };
      await this.opts.store.putStudy(this.study);
    }
    // anything running was published before the stop: publish again under the same message id
    // (JetStream drops the copy if the original is still within its duplicate window)
    for (const job of this.book.running()) await this.publish(job);
    const running = this.book.running().filter((j) => j.kind === 'TRIAL').length;
    const created = this.book.createdTrials;
    this.log.info({ trials: created, running, budget: this.book.budget }, created > 0 ? 'resuming' : 'starting');
  }

  private async run(): Promise<void> {
    const messages = await this.transport.results();
    const statuses = this.transport.workerStatuses();
    // results, worker statuses and the periodic tick all change state: one at a time, in order
    const results = (async () => {
      for await (const m of messages) {
        if (this.closing) break;
        // a failure leaves the result unacknowledged: it comes back after its lease
        await this.serial(async () => {
          await this.onResult(m);
          await this.tick();
        }).catch((e: unknown) => this.log.warn({ err: (e as Error).message }, 'a result could not be handled'));
        if (this.stopped) break;
      }
    })();
    const workers = (async () => {
      for await (const m of statuses) {
        if (this.closing) break;
        await this.serial(() => this.onWorkerStatus(m.data)).catch((e: unknown) =>
          this.log.warn({ err: (e as Error).message }, 'a worker status could not be handled'),
        );
      }
    })();
    try {
      while (!this.closing && !this.stopped) {
        await this.serial(() => this.tick());
        await sleep(this.opts.pollMs ?? DEFAULT_TICK_MS, this.abort.signal);
      }
    } finally {
      messages.stop();
      statuses.unsubscribe();
      await results.catch((e: unknown) => this.log.warn({ err: (e as Error).message }, 'results consumer stopped'));
      await workers.catch(() => undefined);
    }
  }

  private serial(fn: () => Promise<void>): Promise<void> {
    const p = this.chain.then(fn);
    this.chain = p.catch(() => undefined);
    return p;
  }

  /** Time-outs, lost workers, new proposals, and the move to tests and completion; never throws. */
  private async tick(): Promise<void> {
    if (this.closing || this.stopped) return;
    try {
      const now = new Date();
      for (const ch of this.tracker.check(now.getTime())) {
        if (ch.type === 'lost') this.emit({ type: 'worker.lost', study: this.name, worker: ch.worker.worker, silentMs: ch.silentMs });
      }
      for (const job of [...this.unpublished]) {
        if (job.state === 'running') await this.publishOrQueue(job);
        else this.unpublished.delete(job);
      }
      for (const j of this.book.timedOut(now)) {
        // an unstarted proposal still in the queue is waiting behind others, not lost
        if (!j.started && j.seq !== undefined && (await this.transport.queued(j.seq))) this.book.waiting(j.kind, j.number, now);
        else await this.apply(this.book.expire(j.kind, j.number, now));
      }
      await this.topUp();
      await this.apply(this.book.advance(new Date()));
    } catch (e) {
      if (!this.closing) this.log.warn({ err: (e as Error).message }, 'coordinator: will retry');
    }
  }

  /** Issues new trials while idle workers wait and the budget allows. */
  private async topUp(): Promise<void> {
    if (!this.book.mayCreateTrial) return;
    let { pending, waiting } = await this.transport.queue();
    const want = Math.max(this.opts.queueDepth ?? DEFAULT_QUEUE_DEPTH, waiting);
    while (pending < want && this.book.mayCreateTrial && !this.closing) {
      const { label, params } = this.propose(this.book.nextTrialNumber);
      await this.apply(this.book.create(label, params, new Date()));
      pending++;
    }
  }

  /** The weights of trial `number`: the baselines first, then the sampler's proposals. */
  private propose(number: number): { label: string; params: Record<string, number> } {
    const b = studyBaselines(this.genome, this.opts.config.baselines)[number];
    if (b) return b;
    const c = this.opts.config;
    // a random stream per trial number: the same record always gives the same proposal
    const proposed = this.sampler.propose(
      this.space,
      this.book.samplerView(),
      c.objective.direction,
      new Rng(seedFor(c.sampler.seed, number)),
    );
    return { label: this.sampler.name, params: proposalParams(this.genome, this.space, proposed, `study '${this.name}': trial ${number}`) };
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
    if (!holdsAttempt(this.secret, r)) {
      // forged, or from a client that never pulled this attempt's proposal: never recorded
      this.log.warn(
        { kind: r.kind, trial: r.trial, attempt: r.attempt, worker: r.worker },
        "dropping a result without its proposal's token (from a worker that does not hold the trial)",
      );
      m.term();
      return;
    }
    const t = this.book.onResult(r, new Date());
    if (t.disposition === 'stale')
      this.log.info({ generation: r.generation, trial: r.trial }, 'dropping a result of an earlier run of the study');
    if (t.disposition === 'not-current') {
      this.log.info(
        { kind: r.kind, trial: r.trial, attempt: r.attempt, worker: r.worker },
        'dropping a result for an attempt that is no longer current',
      );
    }
    await this.apply(t);
    m.ack();
  }

  private async onWorkerStatus(data: Uint8Array): Promise<void> {
    let s: ReturnType<typeof workerStatusCodec.decode>;
    try {
      s = workerStatusCodec.decode(data, 'worker status');
    } catch (e) {
      this.log.debug({ err: (e as Error).message }, 'dropping a malformed worker status');
      return;
    }
    const now = new Date();
    for (const ch of this.tracker.heard(s, now.getTime())) {
      if (ch.type === 'seen') this.emit({ type: 'worker.seen', study: this.name, worker: ch.worker.worker, provider: ch.worker.provider });
      else this.emit({ type: 'worker.lost', study: this.name, worker: ch.worker.worker, silentMs: ch.silentMs });
    }
    if (s.state === 'busy' && s.study === this.name && s.generation === this.study.generation) {
      await this.apply(this.book.started(s.kind, s.trial, s.attempt, s.worker, now));
    }
  }

  /** Carries out a transition: records first, then the queue, then the events. */
  private async apply(t: Transition): Promise<void> {
    for (const e of t.effects) {
      if (e.type === 'record') await this.opts.store.putJobs(this.name, e.jobs).catch((err: unknown) => this.stopOnStoreFailure(err));
      else if (e.type === 'withdraw') await this.transport.withdraw(e.seq);
      else if (e.type === 'publish') await this.publishOrQueue(e.job);
      else if (e.type === 'fail') {
        this.study = { ...this.study, state: 'failed', failure: e.failure, updatedAt: new Date().toISOString() };
        this.log.error({ code: e.failure.code, trials: e.failure.trials }, studyFailedError(this.name, e.failure).message);
        await this.opts.store.putStudy(this.study).catch((err: unknown) => this.stopOnStoreFailure(err));
        await this.transport
          .withdrawAnnouncement()
          .catch((err: unknown) => this.log.warn({ err: (err as Error).message }, 'could not withdraw the announcement'));
      } else {
        this.study = { ...this.study, state: 'complete', updatedAt: new Date().toISOString() };
        await this.opts.store.putStudy(this.study).catch((err: unknown) => this.stopOnStoreFailure(err));
        await this.transport
          .withdrawAnnouncement()
          .catch((err: unknown) => this.log.warn({ err: (err as Error).message }, 'could not withdraw the announcement'));
      }
    }
    for (const e of t.events) this.emit(e);
  }

  /**
   * The book changed in memory but the record did not: the two must not drift apart. Stop; a
   * restart rebuilds the book from the record, and what was not acknowledged comes back.
   */
  private stopOnStoreFailure(err: unknown): never {
    if (!this.failure) {
      this.failure = err instanceof Error ? err : new Error(String(err));
      this.log.error({ err: this.failure.message }, 'cannot write the study record; stopping (the study resumes from its record)');
      void this.close();
    }
    throw err;
  }

  /**
   * Publishes, or (NATS down past the retries) keeps the job to publish again on the next ticks:
   * it is in the record as running, and must not wait for its timeout to reach a worker.
   */
  private async publishOrQueue(job: JobRecord): Promise<void> {
    try {
      await this.publish(job);
      this.unpublished.delete(job);
    } catch (e) {
      if (this.closing) throw e;
      if (!this.unpublished.has(job))
        this.log.warn({ kind: job.kind, trial: job.number, err: (e as Error).message }, 'cannot publish a proposal yet; will retry');
      this.unpublished.add(job);
    }
  }

  /** Publishes a job's current attempt; the message id makes a repeat a no-op. */
  private async publish(job: JobRecord): Promise<void> {
    const p: Proposal = {
      study: this.name,
      generation: this.study.generation,
      kind: job.kind,
      trial: job.number,
      label: job.label,
      attempt: job.attempt,
      weights: job.params,
      created: Date.parse(job.createdAt),
    };
    p.token = attemptToken(this.secret, p);
    // unique per job record and attempt (tests are re-created when a budget grows), stable across re-publishing
    const msgID = `${this.name}.${this.study.generation}.${job.kind}.${job.number}.${job.attempt}.${p.created}`;
    // a duplicate's ack carries the original's sequence: record it too (a reissue withdraws it)
    const ack = await this.transport.publish(p, msgID, this.abort.signal);
    await this.apply(this.book.published(job.kind, job.number, job.attempt, ack.seq));
  }

  private emit(e: StudyEvent): void {
    this.events.emit(e);
  }
}

/** The baselines a study's config asks for, in the order they are enqueued, as genome parameters. */
function studyBaselines(genome: Genome, kinds: StudyConfig['baselines']) {
  return baselineParams(genome).filter((b) =>
    b.label === 'base' ? kinds.includes('base') : b.label === 'average' ? kinds.includes('average') : kinds.includes('single'),
  );
}

function studyFailedError(study: string, f: StudyFailure): OptimerError {
  const n = f.trials.length;
  return new OptimerError(
    'STUDY_FAILED',
    `study '${study}' stopped: ${n} trial${n === 1 ? '' : 's'} (#${f.trials.join(', #')}) failed in a row with ${f.code}: ${f.message}. ` +
      'No more trials are issued. Fix the cause and run the same command again: the study resumes, and these trials run again.',
  );
}

function bookSettings(study: StudyRecord, c: StudyConfig) {
  const sets = c.objective.sets;
  return {
    study: study.name,
    generation: study.generation,
    budget: c.trials,
    maxAttempts: c.lease.maxAttempts,
    trialTimeoutMs: c.lease.trialTimeoutSeconds * 1000,
    direction: c.objective.direction,
    devSets: sets.map((s) => ({ name: s.name, weight: s.weight })),
    testSets: sets.filter((s) => s.test).map((s) => ({ name: s.name, weight: s.weight })),
    baselineLabels: new Set(studyBaselines(perVectorGenome(study.vectors), c.baselines).map((b) => b.label)),
    canary: c.failFast.canary,
    streak: c.failFast.streak,
  };
}
