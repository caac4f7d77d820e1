import { join } from 'node:path';
import type { JsMsg, Subscription } from 'nats';
import {
  DEFAULT_AHEAD_PER_WORKER,
  DEFAULT_QUEUE_CHECK_MS,
  DEFAULT_QUEUE_DEPTH,
  DEFAULT_RESULT_BATCH as RESULT_BATCH,
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
  SEEDER_UPLOAD_SLOTS,
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
import { mergeTransitions, type Progress, type Transition, TrialBook } from './trial-book.js';
import { attemptToken, holdsAttempt } from './attempt-token.js';
import { StudyTransport } from './transport.js';
import { TurnPace } from './turn-pace.js';
import { queueTarget, type TransferSummary, WorkerTracker } from './worker-tracker.js';

/** A malformed worker status is logged at most this often (a bad worker sends one per heartbeat). */
const MALFORMED_LOG_EVERY_MS = 60_000;

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
  /** proposals kept waiting in the queue beyond those idle workers ask for: at least this many (more with more workers) */
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
  /** the baseline trials the study starts with, in order (made once: they are asked for per trial) */
  private readonly baselines: ReturnType<typeof studyBaselines>;
  private readonly log: Logger;
  private readonly tracker = new WorkerTracker();
  private readonly pace = new TurnPace();
  private chain: Promise<void> = Promise.resolve();
  /** running jobs whose proposal could not be published yet */
  private readonly unpublished = new Set<JobRecord>();
  /** results received and not handled yet, in order: the next turn takes them all */
  private readonly inbox: JsMsg[] = [];
  /** worker statuses received and not handled yet */
  private readonly statusInbox: Uint8Array[] = [];
  /**
   * The mesh's statuses, heard from the start of the loop until close, whatever the study's
   * state: the status service answers until close, and a table frozen when the study stopped
   * missed the workers not heard by then and kept the others' last state (never lost).
   */
  private statuses: Subscription | undefined;
  /** once the study stopped (the tick with it): finds the workers that fell silent */
  private meshTimer: NodeJS.Timeout | undefined;
  /** malformed worker statuses dropped since one was last logged, and when that was (ms) */
  private malformed = { dropped: 0, loggedMs: 0 };
  /** when the tick last asked JetStream about the queue (ms since the epoch) */
  private queueCheckedMs = 0;
  /** the next turn, once one is queued behind the current work (arrivals until it starts join it) */
  private nextTurn: Promise<void> | undefined;
  /**
   * Changes a restart does not need (a worker took an attempt; where a proposal sits in the
   * queue): they go with the next write, or the next tick's, and their events after it. A
   * restarted coordinator learns them again (heartbeats say who works on what; a re-published
   * proposal's ack gives its sequence).
   */
  private readonly later = { jobs: new Set<JobRecord>(), events: [] as StudyEvent[] };
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
    private readonly announcement: StudyAnnouncement,
    /** the announcement's revision in the bucket: each proposal says it, so a worker knows its copy is recent enough */
    private readonly announcementRevision: number,
  ) {
    this.log = opts.log.child({ study: study.name });
    this.events = new StudyEvents((e, event) =>
      this.log.warn({ err: (e as Error).message, event: event.type }, 'a study event listener failed'),
    );
    if (opts.onEvent) this.events.subscribe(opts.onEvent);
    this.genome = perVectorGenome(study.vectors);
    this.space = genomeSpace(this.genome, study.bounds);
    this.baselines = studyBaselines(this.genome, opts.config.baselines);
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

      const seeder = new Seeder(log, SEEDER_UPLOAD_SLOTS);
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
      const announcement: StudyAnnouncement = {
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
      };
      // a complete study (a rerun to read its report) is not offered to workers
      let revision = 0;
      if (book.phase === 'complete') await transport.withdrawAnnouncement();
      else revision = await transport.announce(announcement);
      const coord = new Coordinator(opts, study, book, pool, seeder, transport, announcement, revision);
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

  /** What the workers are fetching now (pool shards, evaluation sets), summed; null when nothing. */
  transfers(): TransferSummary | null {
    return this.tracker.transfers();
  }

  /** Where the study stands: finished and total jobs of the current phase, running, best. */
  progress(): Progress {
    return this.book.progress();
  }

  /** Stops proposing and recording; the record stays consistent and the study resumable. */
  close(): Promise<void> {
    this.closePromise ??= (async () => {
      this.abort.abort();
      clearInterval(this.meshTimer);
      await runAll(
        [
          () => this.statuses?.unsubscribe(),
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
    const running = this.book.running();
    for (let i = 0; i < running.length; i += RESULT_BATCH)
      await Promise.all(running.slice(i, i + RESULT_BATCH).map((job) => this.publish(job)));
    const created = this.book.createdTrials;
    const trials = running.filter((j) => j.kind === 'TRIAL').length;
    this.log.info({ trials: created, running: trials, budget: this.book.budget }, created > 0 ? 'resuming' : 'starting');
  }

  private async run(): Promise<void> {
    const messages = await this.transport.results();
    this.statuses = this.transport.workerStatuses((data) => {
      if (this.closing) return;
      this.statusInbox.push(data);
      this.kick();
    });
    // results and worker statuses are gathered and handled in turns (all that came since the
    // last one, one write); turns and the periodic tick change state one at a time, in order
    const results = (async () => {
      for await (const m of messages) {
        if (this.closing || this.stopped) break;
        this.inbox.push(m);
        const turn = this.kick();
        // a bounded batch: the rest wait in JetStream until this one is recorded
        if (this.inbox.length >= RESULT_BATCH) await turn;
      }
    })();
    try {
      while (!this.closing && !this.stopped) {
        await this.serial(() => this.tick());
        await sleep(this.opts.pollMs ?? DEFAULT_TICK_MS, this.abort.signal);
      }
    } finally {
      messages.stop();
      await results.catch((e: unknown) => this.log.warn({ err: (e as Error).message }, 'results consumer stopped'));
      // what waited for a write (who took which trial) goes in now, for the record's readers
      if (!this.failure) await this.serial(() => this.flush()).catch(() => undefined);
    }
    // the study stopped; until close the statuses still come in (each turn takes them), and
    // this finds the workers that fell silent
    if (!this.closing) this.meshTimer = setInterval(() => this.checkWorkers(new Date()), this.opts.pollMs ?? DEFAULT_TICK_MS).unref();
  }

  private serial(fn: () => Promise<void>): Promise<void> {
    const p = this.chain.then(fn);
    this.chain = p.catch(() => undefined);
    return p;
  }

  /** Queues a turn for what came in, unless one is queued already; resolves when it has run. */
  private kick(): Promise<void> {
    this.nextTurn ??= this.serial(() => this.turn()).catch((e: unknown) =>
      this.log.warn({ err: (e as Error).message }, 'results could not be handled'),
    );
    return this.nextTurn;
  }

  /**
   * Everything that came in since the last turn, as one change: worker statuses, then results
   * (each judged by the book in order, so a duplicate is dropped even within the batch), then the
   * proposals the workers need now, sampled after those results; one write for all of it; then
   * the results are acknowledged and the proposals published. A failure leaves the results
   * unacknowledged: they come back after their lease.
   */
  private async turn(): Promise<void> {
    this.nextTurn = undefined;
    if (this.closing) return;
    const now = new Date();
    let seen = false;
    // taken even once the study stopped: the worker table outlives the trials (see `statuses`)
    for (const data of this.statusInbox.splice(0)) seen = this.onWorkerStatus(data, now) || seen;
    if (this.stopped) return;
    const batch: Transition[] = [];
    const handled: JsMsg[] = [];
    while (this.inbox.length > 0 && this.book.phase !== 'failed') {
      const m = this.inbox.shift()!;
      const t = this.onResult(m, now);
      if (!t) continue; // malformed: terminated
      batch.push(t);
      handled.push(m);
    }
    if (this.book.phase === 'failed') this.inbox.length = 0; // left unacknowledged, for the resumed study
    // a worker that finished has sent its result: proposals now see it (a status alone waits for the tick)
    if (handled.length > 0 || seen) batch.push(...this.createTrials(this.trialsWanted()));
    batch.push(this.book.advance(now));
    await this.apply(mergeTransitions(batch), {
      recorded: () => {
        // a lost ack (NATS gone) brings the result back, and the book drops the repeat
        for (const m of handled) ackQuietly(m);
      },
    });
    if (handled.length > 0) this.pace.turn(handled.length, now.getTime(), Date.now());
  }

  /** Time-outs, lost workers, proposals for workers the turns missed, the move to tests and completion; never throws. */
  private async tick(): Promise<void> {
    if (this.closing || this.stopped) return;
    try {
      const now = new Date();
      this.checkWorkers(now);
      for (const job of [...this.unpublished]) {
        if (job.state === 'running') await this.publishOrQueue(job);
        else this.unpublished.delete(job);
      }
      for (const j of this.book.timedOut(now)) {
        // an unstarted proposal still in the queue is waiting behind others, not lost
        if (!j.started && j.seq !== undefined && (await this.transport.queued(j.seq))) this.book.waiting(j.kind, j.number, now);
        else await this.apply(this.book.expire(j.kind, j.number, now));
      }
      const batch: Transition[] = [];
      if (this.book.mayCreateTrial && this.unpublished.size === 0 && now.getTime() - this.queueCheckedMs >= DEFAULT_QUEUE_CHECK_MS) {
        // JetStream's own count: workers waiting on an empty queue whose status was lost, or that send none
        const { pending, waiting } = await this.transport.queue();
        this.queueCheckedMs = now.getTime();
        batch.push(...this.createTrials(this.trialsWanted(pending === 0 ? waiting : 0, pending)));
      }
      batch.push(this.book.advance(new Date()));
      await this.apply(mergeTransitions(batch), { flush: true });
    } catch (e) {
      if (!this.closing) this.log.warn({ err: (e as Error).message }, 'coordinator: will retry');
    }
  }

  /** Workers silent for too long are lost, each said once. */
  private checkWorkers(now: Date): void {
    for (const ch of this.tracker.check(now.getTime())) {
      if (ch.type === 'lost') this.emit({ type: 'worker.lost', study: this.name, worker: ch.worker.worker, silentMs: ch.silentMs });
    }
  }

  /**
   * How many trials to create now: one for each idle worker that may take this study's trials,
   * plus a few ahead (a queue depth that grows with the live workers), less those in the queue.
   */
  private trialsWanted(waiting = 0, queued?: number): number {
    const target = queueTarget(this.tracker.serving(this.announcement), {
      minDepth: this.opts.queueDepth ?? DEFAULT_QUEUE_DEPTH,
      perWorker: DEFAULT_AHEAD_PER_WORKER,
      perTurn: this.pace.aheadWanted(Date.now()),
      waiting,
    });
    return this.book.trialsToCreate(target, queued);
  }

  /**
   * Creates `n` trials, each proposed after the one before is in the book (the sampler sees it
   * running). A sampler that fails leaves the rest to the next tick: the results of the same
   * turn are in the book already and must still be written.
   */
  private createTrials(n: number): Transition[] {
    const out: Transition[] = [];
    try {
      for (let i = 0; i < n && this.book.mayCreateTrial && !this.closing; i++) {
        const { label, params } = this.propose(this.book.nextTrialNumber);
        out.push(this.book.create(label, params, new Date()));
      }
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'cannot propose a trial; will retry');
    }
    return out;
  }

  /** The weights of trial `number`: the baselines first, then the sampler's proposals. */
  private propose(number: number): { label: string; params: Record<string, number> } {
    const b = this.baselines[number];
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

  /** The book's transition for a result; undefined for a malformed one (terminated: it never comes back). */
  private onResult(m: JsMsg, now: Date): Transition | undefined {
    let r: Result;
    try {
      r = resultCodec.decode(m.data, `result ${m.subject}#${m.seq}`);
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'dropping a malformed result');
      m.term();
      return undefined;
    }
    if (!holdsAttempt(this.secret, r)) {
      // forged, or from a client that never pulled this attempt's proposal: never recorded
      this.log.warn(
        { kind: r.kind, trial: r.trial, attempt: r.attempt, worker: r.worker },
        "dropping a result without its proposal's token (from a worker that does not hold the trial)",
      );
      m.term();
      return undefined;
    }
    const t = this.book.onResult(r, now);
    if (t.disposition === 'stale')
      this.log.info({ generation: r.generation, trial: r.trial }, 'dropping a result of an earlier run of the study');
    if (t.disposition === 'not-current') {
      this.log.info(
        { kind: r.kind, trial: r.trial, attempt: r.attempt, worker: r.worker },
        'dropping a result for an attempt that is no longer current',
      );
    }
    return t;
  }

  /** Tracks the worker; a start it reports waits for the next write. Returns whether the worker is newly seen. */
  private onWorkerStatus(data: Uint8Array, now: Date): boolean {
    let s: ReturnType<typeof workerStatusCodec.decode>;
    try {
      s = workerStatusCodec.decode(data, 'worker status');
    } catch (e) {
      // its sender is missing from the worker table: said, with how many were dropped since
      this.malformed.dropped++;
      if (now.getTime() - this.malformed.loggedMs >= MALFORMED_LOG_EVERY_MS) {
        this.log.warn(
          { err: (e as Error).message, dropped: this.malformed.dropped },
          'dropping malformed worker statuses: a worker that sends only such is missing from the worker table',
        );
        this.malformed = { dropped: 0, loggedMs: now.getTime() };
      }
      return false;
    }
    let seen = false;
    for (const ch of this.tracker.heard(s, now.getTime())) {
      if (ch.type === 'seen') {
        seen = true;
        this.emit({ type: 'worker.seen', study: this.name, worker: ch.worker.worker, provider: ch.worker.provider });
      } else this.emit({ type: 'worker.lost', study: this.name, worker: ch.worker.worker, silentMs: ch.silentMs });
    }
    // a stopped study's record takes no more starts
    if (!this.stopped && s.state === 'busy' && s.study === this.name && s.generation === this.study.generation) {
      this.defer(this.book.started(s.kind, s.trial, s.attempt, s.worker, now));
    }
    return seen;
  }

  /** Keeps a transition's records and events for the next write (it must have no other effects). */
  private defer(t: Transition): void {
    for (const e of t.effects) {
      if (e.type !== 'record') throw new Error(`coordinator: a ${e.type} effect cannot wait for the next write`);
      for (const j of e.jobs) this.later.jobs.add(j);
    }
    this.later.events.push(...t.events);
  }

  /** Writes what waited for a write, if anything did. */
  private async flush(): Promise<void> {
    await this.apply({ effects: [], events: [] }, { flush: true });
  }

  /**
   * Carries out a transition: its records in one write first (with those that waited for a
   * write, which `flush` writes even when the transition has none), then `recorded`, then the
   * queue (consecutive publishes pipelined, in order), then the events.
   */
  private async apply(t: Transition, o: { recorded?: () => void; flush?: boolean } = {}): Promise<void> {
    let events = t.events;
    if (o.flush || t.effects.some((e) => e.type === 'record')) {
      const jobs = new Set(this.later.jobs);
      for (const e of t.effects) if (e.type === 'record') for (const j of e.jobs) jobs.add(j);
      if (this.later.events.length > 0) events = [...this.later.events, ...t.events];
      this.later.jobs.clear();
      this.later.events = [];
      if (jobs.size > 0) await this.opts.store.putJobs(this.name, [...jobs]).catch((err: unknown) => this.stopOnStoreFailure(err));
    }
    o.recorded?.();
    let publish: JobRecord[] = [];
    for (const e of t.effects) {
      if (e.type === 'record') continue;
      if (e.type === 'publish') {
        publish.push(e.job);
        continue;
      }
      if (publish.length > 0) await this.publishAll(publish);
      publish = [];
      if (e.type === 'withdraw') await this.transport.withdraw(e.seq);
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
    if (publish.length > 0) await this.publishAll(publish);
    for (const e of events) this.emit(e);
  }

  /** Publishes several proposals at once: JetStream keeps their order, and the acks come back together. */
  private async publishAll(jobs: readonly JobRecord[]): Promise<void> {
    await Promise.all(jobs.map((job) => this.publishOrQueue(job)));
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
      ...(this.announcementRevision ? { announcementRevision: this.announcementRevision } : {}),
    };
    p.token = attemptToken(this.secret, p);
    // unique per job record and attempt (tests are re-created when a budget grows), stable across re-publishing
    const msgID = `${this.name}.${this.study.generation}.${job.kind}.${job.number}.${job.attempt}.${p.created}`;
    // a duplicate's ack carries the original's sequence: record it too (a reissue withdraws it)
    const ack = await this.transport.publish(p, msgID, this.abort.signal);
    // needed only to withdraw it: a restart re-publishes and learns it again from the duplicate's ack
    this.defer(this.book.published(job.kind, job.number, job.attempt, ack.seq));
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

function ackQuietly(m: JsMsg): void {
  try {
    m.ack();
  } catch {
    // the connection is closing: the result comes back after its lease, as a duplicate
  }
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
