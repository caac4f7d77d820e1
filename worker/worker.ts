import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { hostname } from 'node:os';
import type { Consumer, JetStreamClient, JsMsg, KV, NatsConnection } from 'nats';
import {
  announcementCodec,
  Backoff,
  closeNats,
  connectNats,
  DEFAULT_HEARTBEAT_MS,
  DEFAULT_PULL_EXPIRES_MS,
  DEFAULT_STUDY_LIST_MS,
  type ExecutionProvider,
  isNoJetStream,
  isOptimerError,
  LOCKS_BUCKET,
  type Logger,
  noJetStreamMessage,
  perVectorGenome,
  type Proposal,
  proposalCodec,
  publishWithRetry,
  type Result,
  resultCodec,
  runAll,
  Seeder,
  STUDIES_BUCKET,
  type StudyAnnouncement,
  sleep,
  subjects,
  TRIALS_STREAM,
  type WorkerStatus,
  workConsumer,
  workerStatusCodec,
  withTimeout,
} from '../shared/index.js';
import { evaluateSession } from './eval/evaluate.js';
import { createMergedSession } from './eval/session.js';
import { mergeInto } from './merge/merge.js';
import { BlobCache } from './shards/fetch.js';
import { NatsHolders } from './shards/holders.js';
import { localAddressTowards } from './shards/local-address.js';
import { StudyContexts } from './study-contexts.js';

export interface WorkerOptions {
  natsUrl: string;
  /** content-addressed cache of shards, manifests and evaluation sets */
  cacheDir: string;
  id?: string;
  /** overrides the study's preferred execution provider */
  provider?: ExecutionProvider;
  log: Logger;
  /** how often the worker says what it is doing, ms */
  heartbeatMs?: number;
  /** serve cached pieces to peers (default true) */
  serve?: boolean;
  /** where to serve them (default: the local address this machine reaches NATS from) */
  serveHost?: string;
  servePort?: number;
  /** the host peers are told to fetch from (default: serveHost) */
  advertiseHost?: string;
}

/** The most each step of close() may take, ms (the NATS drain has its own, shorter bound). */
const CLOSE_STEP_MS = 3000;

/** A study the worker pulls proposals for: its own work consumer and lease. */
interface StudyQueue {
  study: string;
  consumer: Consumer;
  /** in-progress acks this often keep the lease (a third of the study's ack wait) */
  leaseRenewMs: number;
}

/**
 * A worker: pulls proposals from the work queues of every announced study in turn, fetches what
 * it lacks over gRPC (verified by sha256), merges, evaluates with ONNX Runtime, publishes the
 * result, then acks. While it works it keeps the lease with in-progress acks; if it dies,
 * JetStream redelivers the proposal to another worker after the lease runs out. It tells the
 * mesh what it is doing (idle, busy with which trial, stopped) on `optimer.v1.workers`.
 */
export class Worker {
  readonly id: string;
  private loop: Promise<void> | undefined;
  private current: { msg: JsMsg; abort: AbortController } | undefined;
  private closePromise: Promise<void> | undefined;
  private readonly cache: BlobCache;
  private readonly contexts: StudyContexts;
  private readonly queues = new Map<string, StudyQueue>();
  /** announced studies no coordinator runs (logged once) */
  private readonly idleStudies = new Set<string>();
  private listedAt = 0;
  private status: WorkerStatus;
  private heartbeat: NodeJS.Timeout | undefined;
  /** aborted by close(): ends the loop's waits and the result's publish retries */
  private readonly stopping = new AbortController();
  /** the lock bucket, once it exists (an older coordinator never makes one) */
  private locks: KV | undefined;
  /** serving this worker's cache to its peers, and saying what it holds (absent with serve: false) */
  private sharing: { seeder: Seeder; holders: NatsHolders } | undefined;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly opts: WorkerOptions,
  ) {
    this.id = opts.id ?? `${hostname()}-${process.pid}-${randomBytes(2).toString('hex')}`;
    this.cache = new BlobCache(opts.cacheDir);
    this.contexts = new StudyContexts(this.cache, opts.log.child({ worker: this.id }));
    this.status = idle(this.id, opts.provider ?? '', opts.heartbeatMs ?? DEFAULT_HEARTBEAT_MS);
  }

  private get closing(): boolean {
    return this.stopping.signal.aborted;
  }

  static async start(opts: WorkerOptions): Promise<Worker> {
    await mkdir(opts.cacheDir, { recursive: true });
    const nc = await connectNats(opts.natsUrl, 'optimer-worker');
    const w = new Worker(nc, nc.jetstream(), opts);
    if (opts.serve !== false) await w.startServing();
    w.say(w.status);
    w.heartbeat = setInterval(() => w.say(w.status), w.status.heartbeatMs);
    w.loop = w.run();
    return w;
  }

  /** Serves the cache to peers and joins the tracker; without JetStream yet, the worker only fetches. */
  private async startServing(): Promise<void> {
    const log = this.opts.log.child({ worker: this.id });
    const seeder = new Seeder(log);
    try {
      const host = this.opts.serveHost ?? (await localAddressTowards(this.opts.natsUrl));
      const address = await seeder.start(host, this.opts.servePort ?? 0, this.opts.advertiseHost);
      const holders = await NatsHolders.open(this.js, Buffer.from(this.id).toString('hex'), address, log);
      this.sharing = { seeder, holders };
      this.cache.share(seeder, holders);
      log.info({ address }, 'serving cached pieces to peers');
    } catch (e) {
      await seeder.close();
      log.warn({ err: (e as Error).message }, 'cannot serve pieces to peers; fetching from the seeders only');
    }
  }

  /** Counts of the pieces this worker fetched: how many, from peers or seeders, corrupt, resumed. */
  get transfers(): Readonly<BlobCache['stats']> {
    return this.cache.stats;
  }

  /** Where this worker serves its cache to peers ('' when it does not). */
  get serving(): string {
    return this.sharing?.seeder.address ?? '';
  }

  /** Resolves when the worker has stopped (after close(), or a fatal error). */
  closed(): Promise<void> {
    return this.loop ?? Promise.resolve();
  }

  /**
   * Stops taking work, abandons the job in hand (its evaluation stops; the proposal goes back to
   * the queue at once, not after the lease), says it stopped, disconnects. Idempotent; every
   * step runs even when one fails.
   */
  close(): Promise<void> {
    this.closePromise ??= (async () => {
      this.stopping.abort();
      const job = this.current;
      job?.abort.abort();
      job?.msg.nak(); // redeliver now rather than after the lease
      // every step is bounded in time: with NATS gone a request in the loop or the drain can
      // wait forever, and a worker asked to stop must stop
      await runAll(
        [
          () => withTimeout(this.cache.close(), CLOSE_STEP_MS, 'closing the shard cache'), // cancels a transfer in progress
          () => withTimeout(this.loop, CLOSE_STEP_MS, 'stopping the pull loop'),
          () => clearInterval(this.heartbeat),
          () => this.say({ ...idle(this.id, this.status.provider, this.status.heartbeatMs), state: 'stopped' }),
          () => withTimeout(this.contexts.close(), CLOSE_STEP_MS, 'closing the study contexts'),
          // a clean leave: peers stop asking this worker at once rather than after the entries expire
          () => withTimeout(this.sharing?.holders.leave(), CLOSE_STEP_MS, 'leaving the piece tracker'),
          () => withTimeout(this.sharing?.seeder.close(), CLOSE_STEP_MS, 'stopping serving pieces'),
          () => closeNats(this.nc),
        ],
        (e) => this.opts.log.debug({ err: (e as Error).message }, 'worker: a close step failed'),
      );
    })();
    return this.closePromise;
  }

  private async run(): Promise<void> {
    const log = this.opts.log.child({ worker: this.id });
    const backoff = new Backoff({ initialMs: 250, maxMs: 5000 });
    let kv: KV | undefined;
    let waiting = false;
    let noJetStream = false;
    while (!this.closing) {
      try {
        kv ??= await this.js.views.kv(STUDIES_BUCKET, { bindOnly: true });
        noJetStream = false;
        const queues = await this.studyQueues(kv, log);
        if (queues.length === 0) {
          if (!waiting) log.info({ nats: this.opts.natsUrl }, 'waiting for a coordinator to announce a study');
          waiting = true;
          await sleep(backoff.next(), this.stopping.signal);
          continue;
        }
        if (waiting) log.info({ studies: queues.map((q) => q.study) }, 'worker ready');
        waiting = false;
        backoff.reset();
        // one pull per study in turn: every announced study gets this worker's time
        for (const q of queues) {
          if (this.closing) break;
          let msg: JsMsg | null;
          try {
            msg = await q.consumer.next({ expires: DEFAULT_PULL_EXPIRES_MS });
          } catch (e) {
            // this study's queue went away (the study ended): forget it, keep the others
            this.queues.delete(q.study);
            log.debug({ study: q.study, err: (e as Error).message }, 'cannot pull from a study');
            continue;
          }
          if (!msg) continue;
          if (this.closing) {
            msg.nak();
            break;
          }
          const abort = new AbortController();
          this.current = { msg, abort };
          await this.handle(msg, kv, q.leaseRenewMs, abort.signal, log);
          this.current = undefined;
        }
      } catch (e) {
        this.current = undefined;
        if (this.closing) break;
        // no coordinator so far (no bucket), or NATS hiccuped, or the server has no JetStream
        kv = undefined;
        this.locks = undefined;
        this.queues.clear();
        if (isNoJetStream(e)) {
          // said once until JetStream answers: the server may be restarted with it
          if (!noJetStream) log.warn(`${noJetStreamMessage(this.opts.natsUrl)}; waiting for it`);
          noJetStream = true;
        } else if (!waiting || noJetStream) {
          log.info({ nats: this.opts.natsUrl, err: (e as Error).message }, 'waiting for a coordinator');
          noJetStream = false;
        }
        waiting = true;
        await sleep(backoff.next(), this.stopping.signal);
      }
    }
  }

  /** The work queues of the announced studies, the list re-read every few seconds. */
  private async studyQueues(kv: KV, log: Logger): Promise<StudyQueue[]> {
    if (Date.now() - this.listedAt < DEFAULT_STUDY_LIST_MS && this.queues.size > 0) return [...this.queues.values()];
    const names = new Set<string>();
    for await (const k of await kv.keys()) names.add(k);
    for (const study of this.queues.keys()) if (!names.has(study)) this.queues.delete(study);
    const held = await this.heldStudies();
    for (const study of names) {
      if (held && !held.has(study)) {
        // announced, but no coordinator holds it (stopped, or killed and its lock expired): its
        // proposals would be worked for nobody; it is served again once a coordinator resumes it
        if (this.queues.delete(study) || !this.idleStudies.has(study))
          log.info({ study }, 'no coordinator runs this study; not taking its proposals');
        this.idleStudies.add(study);
        continue;
      }
      this.idleStudies.delete(study);
      try {
        // read again each time: a rerun of the study may have changed its lease
        const consumer = this.queues.get(study)?.consumer ?? (await this.js.consumers.get(TRIALS_STREAM, workConsumer(study)));
        const info = await consumer.info(false);
        if (!this.queues.has(study)) log.debug({ study }, 'serving a study');
        this.queues.set(study, { study, consumer, leaseRenewMs: Math.max(200, (info.config.ack_wait ?? 30e9) / 1e6 / 3) });
      } catch (e) {
        this.queues.delete(study);
        log.debug({ study, err: (e as Error).message }, 'a study has no work queue yet');
      }
    }
    this.listedAt = Date.now();
    return [...this.queues.values()];
  }

  /** Studies whose coordinator holds its lock; undefined when the mesh has no lock bucket (an older coordinator). */
  private async heldStudies(): Promise<Set<string> | undefined> {
    try {
      if (!this.locks) {
        const kv = await this.js.views.kv(LOCKS_BUCKET, { bindOnly: true });
        await kv.status(); // throws when the bucket does not exist
        this.locks = kv;
      }
      const held = new Set<string>();
      for await (const k of await this.locks.keys()) held.add(k);
      return held;
    } catch {
      this.locks = undefined;
      return undefined;
    }
  }

  private async handle(msg: JsMsg, kv: KV, leaseRenewMs: number, signal: AbortSignal, log: Logger): Promise<void> {
    let p: Proposal;
    try {
      p = proposalCodec.decode(msg.data, `proposal ${msg.subject}#${msg.seq}`);
    } catch (e) {
      log.warn({ err: (e as Error).message }, 'dropping a malformed proposal');
      msg.term();
      return;
    }
    const plog = log.child({ study: p.study, trial: p.kind === 'TRIAL' ? p.trial : p.label, attempt: p.attempt });
    const entry = await kv.get(p.study);
    if (!entry || entry.length === 0) {
      plog.warn('no announcement for this study yet; returning the proposal');
      msg.nak(2000);
      return;
    }
    let ann: StudyAnnouncement;
    try {
      ann = announcementCodec.decode(entry.value, `announcement of ${p.study}`);
    } catch (e) {
      plog.warn({ err: (e as Error).message }, 'the study announcement is malformed; returning the proposal');
      msg.nak(5000);
      return;
    }
    if (p.generation !== ann.generation) {
      plog.info({ generation: p.generation, current: ann.generation }, 'dropping a proposal of an earlier run of the study');
      msg.term();
      return;
    }
    const provider = this.opts.provider ?? ((ann.provider || 'cpu') as ExecutionProvider);
    this.setStatus({
      ...this.status,
      state: 'busy',
      study: p.study,
      generation: p.generation,
      kind: p.kind,
      trial: p.trial,
      attempt: p.attempt,
    });
    const renew = setInterval(() => msg.working(), leaseRenewMs);
    const timings = { fetchMs: 0, mergeMs: 0, evalMs: 0 };
    const base: Omit<Result, 'scores' | 'error'> = {
      study: p.study,
      generation: p.generation,
      kind: p.kind,
      trial: p.trial,
      label: p.label,
      attempt: p.attempt,
      created: p.created,
      worker: this.id,
      timings,
      provider,
    };
    let result: Result;
    try {
      const t0 = performance.now();
      const ctx = await this.contexts.get(ann, signal);
      signal.throwIfAborted();
      const t1 = performance.now();
      const weighting = perVectorGenome(Object.keys(p.weights)).weighting(p.weights);
      const merged = await mergeInto(ctx.pool, weighting, this.contexts.mergeBuffers(ctx), signal); // unknown vector → BAD_ARGUMENT
      const t2 = performance.now();
      const session = await createMergedSession(ctx.graph, merged, provider);
      let scores: Awaited<ReturnType<typeof evaluateSession>>;
      try {
        scores = await evaluateSession(session, p.kind === 'TRIAL' ? ctx.dev : ctx.test, ctx.pool.manifest.model, ann.batchTokens, signal);
      } finally {
        await session.release();
      }
      const t3 = performance.now();
      Object.assign(timings, { fetchMs: t1 - t0, mergeMs: t2 - t1, evalMs: t3 - t2 });
      result = { ...base, scores: scores.map((s) => ({ name: s.name, score: s.score, tokens: s.tokens })), error: null };
      plog.info({ timings, scores: result.scores.map((s) => s.score) }, 'evaluated');
    } catch (e) {
      if (signal.aborted) return; // close() gave the proposal back; a result now would only be dropped
      const code = isOptimerError(e) ? e.code : 'RUNTIME';
      // what a retry can fix is the error's to say: an unexpected exception may be transient
      const retryable = isOptimerError(e) ? e.retryable : true;
      plog.warn({ err: (e as Error).message, code, retryable }, 'evaluation failed');
      result = { ...base, scores: [], error: { code, message: (e as Error).message, retryable } };
    } finally {
      clearInterval(renew);
      this.setStatus(idle(this.id, this.status.provider, this.status.heartbeatMs));
    }
    if (this.closing) return; // close() gave the proposal back; a late result would only be dropped
    // one result per proposal message and worker: a retried publish is de-duplicated by JetStream
    await publishWithRetry(this.js, subjects.results(p.study), resultCodec.encode(result), {
      msgID: `${p.study}.${msg.seq}.${this.id}`,
      signal: this.stopping.signal,
    });
    msg.ack();
  }

  private setStatus(s: WorkerStatus): void {
    this.status = s;
    this.say(s);
  }

  /** Tells the mesh what this worker does (core NATS: a lost message is replaced by the next). */
  private say(s: WorkerStatus): void {
    try {
      this.nc.publish(subjects.workers, workerStatusCodec.encode(s));
    } catch {
      // closed or reconnecting: the next heartbeat says it again
    }
  }
}

function idle(worker: string, provider: string, heartbeatMs: number): WorkerStatus {
  return { worker, state: 'idle', provider, study: '', generation: 0, kind: 'TRIAL', trial: 0, attempt: 0, heartbeatMs };
}
