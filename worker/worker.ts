import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { availableParallelism, hostname } from 'node:os';
import { type Consumer, type ConsumerInfo, Events, type JetStreamClient, type JsMsg, type NatsConnection, type Subscription } from 'nats';
import {
  Backoff,
  closeNats,
  connectNats,
  DEFAULT_HEARTBEAT_MS,
  DEFAULT_IDLE_POLL_MS,
  DEFAULT_PULL_EXPIRES_MS,
  DEFAULT_STUDY_LIST_MS,
  type ExecutionProvider,
  formatBytes,
  isNoJetStream,
  isOptimerError,
  type Logger,
  natsConnectOptions,
  noJetStreamMessage,
  OptimerError,
  perVectorGenome,
  type Proposal,
  proposalCodec,
  publishWithRetry,
  type Result,
  resultCodec,
  runAll,
  Seeder,
  type StudyAnnouncement,
  type StudyLimits,
  sleep,
  subjects,
  TRIALS_STREAM,
  type WorkerCapabilities,
  type WorkerActivity,
  type WorkerStatus,
  workConsumer,
  workerActivity,
  whyNotServe,
  workerStatusCodec,
  withTimeout,
  PEER_UPLOAD_SLOTS,
  type WeightFeed,
} from '../shared/index.js';
import { evaluateSession } from './eval/evaluate.js';
import { TrialSessions } from './eval/trial-session.js';
import { claimCacheDir } from './shards/cache-claim.js';
import { BlobCache } from './shards/fetch.js';
import { FairShare } from './fleet/fair-share.js';
import { detectDevice, type IdleCheck, idleCheck } from './fleet/hardware.js';
import { Throughput } from './fleet/throughput.js';
import { NatsHolders } from './shards/holders.js';
import { localAddressTowards } from './shards/local-address.js';
import { Puller } from './puller.js';
import { StudyBoard } from './study-board.js';
import { StudyContexts } from './study-contexts.js';

export interface WorkerOptions {
  natsUrl: string;
  /** content-addressed cache of shards, manifests and evaluation sets */
  cacheDir: string;
  /**
   * the most the cache may hold, bytes (default: no limit); least recently used blobs are
   * evicted first, never those a kept study or a fetch uses. Needs a folder no other worker uses.
   */
  cacheMaxBytes?: number;
  id?: string;
  /** overrides the study's preferred execution provider */
  provider?: ExecutionProvider;
  log: Logger;
  /** how often the worker says what it is doing, ms */
  heartbeatMs?: number;
  /** native threads of the merge (default: the machine's cores; merge and forward pass never overlap in a worker) */
  mergeThreads?: number;
  /** ONNX Runtime's intra-op threads (default: ONNX Runtime's own, one per core) */
  intraOpThreads?: number;
  /** on the CPU provider, how merged weights reach ONNX Runtime (default: inputs; see TrialSessions) */
  weightFeed?: WeightFeed;
  /** what the worker says it is, where detection is wrong or a test fakes it (evaluation is not changed) */
  advertise?: { provider?: ExecutionProvider; deviceName?: string; memoryGb?: number };
  /** take trials only while the GPU is idle, and hand a running one back when it stops being idle */
  onlyWhenIdle?: boolean;
  /** the idle check: a /bin/sh command, exit 0 = idle (default: nvidia-smi's utilisation and memory) */
  idleCommand?: string;
  /** how often the idle check runs, ms */
  idlePollMs?: number;
  /** serve only these studies / studies of these departments (empty or absent: any) */
  studies?: string[];
  departments?: string[];
  /**
   * For bench/control-plane only: replaces merging and evaluation by a wait of this many ms and
   * made-up scores, so the benchmark measures the control plane alone. Never set it elsewhere.
   */
  benchFixedEvalMs?: number;
  /** For bench/control-plane only: called with the ms from asking a queue to holding its proposal. */
  benchOnDispatch?: (ms: number) => void;
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
  /** its share of the pool relative to other studies */
  priority: number;
  /** the announcement's revision its consumer's lease was read at (a rerun re-announces) */
  revision: number;
  /** when its consumer was last read, ms */
  checkedAt: number;
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
  private current: { msg: JsMsg; abort: AbortController; handedBack: boolean; publishing: boolean } | undefined;
  private closePromise: Promise<void> | undefined;
  private readonly cache: BlobCache;
  private readonly contexts: StudyContexts;
  /** merges each trial and holds the session it is evaluated in (one pool's, kept across trials on the CPU) */
  private readonly sessions: TrialSessions;
  private readonly queues = new Map<string, StudyQueue>();
  /** the studies' announcements and locks, kept by watches (absent until the bucket exists, and after a reconnect) */
  private board: StudyBoard | undefined;
  /** a worked proposal whose ack goes out with the next pull (ackSoon) */
  private pendingAck: JsMsg | undefined;
  /** pulls proposals over one standing subscription */
  private readonly puller: Puller;
  /** the board's version the queues were last made from */
  private boardVersion = -1;
  /** announced studies no coordinator runs (logged once) */
  private readonly idleStudies = new Set<string>();
  private listedAt = 0;
  private status: WorkerStatus;
  private heartbeat: NodeJS.Timeout | undefined;
  /** aborted by close(): ends the loop's waits and the result's publish retries */
  private readonly stopping = new AbortController();
  private capabilities: WorkerCapabilities;
  private readonly limits: StudyLimits;
  private fairShare = new FairShare();
  /** the mesh's statuses, heard only while the worker serves several studies (the fair share needs them then) */
  private statuses: Subscription | undefined;
  private readonly throughput = new Throughput();
  /** studies this worker does not serve, with why (said once per reason) */
  private readonly skipped = new Map<string, string>();
  private idle: IdleCheck | null = null;
  private idleTimer: NodeJS.Timeout | undefined;
  private checkingIdle = false;
  /** serving this worker's cache to its peers, and saying what it holds (absent with serve: false) */
  private sharing: { seeder: Seeder; holders: NatsHolders } | undefined;
  /** studies refused because their blobs exceed the cache limit: study → the pool's manifest then */
  private readonly refused = new Map<string, string>();
  /** removes this worker's mark from the cache folder */
  private releaseCache: () => Promise<void> = async () => undefined;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly opts: WorkerOptions,
  ) {
    this.id = opts.id ?? `${hostname()}-${process.pid}-${randomBytes(2).toString('hex')}`;
    this.cache = new BlobCache(opts.cacheDir, undefined, this.id, {
      log: opts.log.child({ worker: this.id }),
      ...(opts.cacheMaxBytes !== undefined ? { limitBytes: opts.cacheMaxBytes } : {}),
    });
    this.contexts = new StudyContexts(this.cache, opts.log.child({ worker: this.id }));
    this.sessions = new TrialSessions(opts.log.child({ worker: this.id }));
    this.puller = new Puller(nc, natsConnectOptions(opts.natsUrl, '').inboxPrefix);
    this.limits = { studies: opts.studies ?? [], departments: opts.departments ?? [] };
    this.capabilities = {
      provider: opts.advertise?.provider ?? opts.provider ?? 'cpu',
      deviceName: opts.advertise?.deviceName ?? '',
      memoryGb: opts.advertise?.memoryGb ?? 0,
      concurrency: 1, // one trial at a time
      trialsPerMinute: 0,
      tokensPerSecond: 0,
      onlyWhenIdle: opts.onlyWhenIdle ?? false,
      gpuIdle: true,
      studies: [...this.limits.studies],
      departments: [...this.limits.departments],
    };
    this.status = this.idleStatus();
  }

  private idleStatus(): WorkerStatus {
    return { ...idle(this.id, this.opts.provider ?? '', this.opts.heartbeatMs ?? DEFAULT_HEARTBEAT_MS), capabilities: this.capabilities };
  }

  private get closing(): boolean {
    return this.stopping.signal.aborted;
  }

  static async start(opts: WorkerOptions): Promise<Worker> {
    const idle = opts.onlyWhenIdle ? await idleCheck(opts.idleCommand) : null;
    if (opts.onlyWhenIdle && !idle)
      throw new OptimerError(
        'BAD_ARGUMENT',
        '--only-when-idle: nvidia-smi does not answer here; name an idle check with --idle-command CMD (exit 0 = idle)',
      );
    if (opts.cacheMaxBytes !== undefined && !(opts.cacheMaxBytes > 0))
      throw new OptimerError('BAD_ARGUMENT', `cache limit ${opts.cacheMaxBytes} bytes: expected a positive size`);
    await mkdir(opts.cacheDir, { recursive: true });
    const id = opts.id ?? `${hostname()}-${process.pid}-${randomBytes(2).toString('hex')}`;
    const releaseCache = await claimCacheDir(opts.cacheDir, id, opts.cacheMaxBytes ?? 0);
    let w: Worker;
    let device: Awaited<ReturnType<typeof detectDevice>> | undefined;
    let nc: NatsConnection;
    try {
      device = opts.advertise?.deviceName && opts.advertise.memoryGb !== undefined ? undefined : await detectDevice();
      nc = await connectNats(opts.natsUrl, 'optimer-worker');
      w = new Worker(nc, nc.jetstream(), { ...opts, id });
    } catch (e) {
      await releaseCache();
      throw e;
    }
    w.releaseCache = releaseCache;
    await w.cache.open();
    w.logCache();
    w.capabilities.deviceName ||= device?.deviceName ?? '';
    if (opts.advertise?.memoryGb === undefined) w.capabilities.memoryGb = device?.memoryGb ?? 0;
    w.idle = idle;
    if (idle) {
      w.capabilities.gpuIdle = await idle();
      w.idleTimer = setInterval(() => void w.checkIdle(), opts.idlePollMs ?? DEFAULT_IDLE_POLL_MS);
    }
    w.status = w.idleStatus();
    // what the watches missed while NATS was away is read afresh: the loop opens a new board
    void (async () => {
      for await (const s of nc.status()) if (s.type === Events.Reconnect && w.board) w.board.stale ??= new Error('reconnected to NATS');
    })().catch(() => undefined);
    if (opts.serve !== false) await w.startServing();
    w.say(w.status);
    w.heartbeat = setInterval(() => w.say(w.status), w.status.heartbeatMs);
    w.loop = w.run();
    return w;
  }

  /** Says what the cache holds and its limit, once at start. */
  private logCache(): void {
    const u = this.cache.usage();
    this.opts.log.info(
      { worker: this.id, cache: this.opts.cacheDir, usedBytes: u.usedBytes, blobs: u.blobs, limitBytes: u.limitBytes },
      `cache ${this.opts.cacheDir}: ${formatBytes(u.usedBytes)} in ${u.blobs} blobs, ${u.limitBytes ? `limit ${formatBytes(u.limitBytes)}` : 'no limit'}`,
    );
  }

  /** Serves the cache to peers and joins the tracker; without JetStream yet, the worker only fetches. */
  private async startServing(): Promise<void> {
    const log = this.opts.log.child({ worker: this.id });
    const seeder = new Seeder(log, PEER_UPLOAD_SLOTS);
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

  /** What the cache holds (bytes, limit, blobs, pinned, evicted) and the transfers under way, as the status says. */
  get cacheStatus(): { cache: ReturnType<BlobCache['usage']>; transfers: ReturnType<BlobCache['transferViews']> } {
    return { cache: this.cache.usage(), transfers: this.cache.transferViews() };
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
      this.flushAck();
      const job = this.current;
      job?.abort.abort();
      job?.msg.nak(); // redeliver now rather than after the lease
      // every step is bounded in time: with NATS gone a request in the loop or the drain can
      // wait forever, and a worker asked to stop must stop
      await runAll(
        [
          // ends a waiting pull at once (the loop stops), and hands back a proposal still on its way
          () => withTimeout(this.puller.close(), CLOSE_STEP_MS, 'closing the puller'),
          () => withTimeout(this.cache.close(), CLOSE_STEP_MS, 'closing the shard cache'), // cancels a transfer in progress
          () => withTimeout(this.loop, CLOSE_STEP_MS, 'stopping the pull loop'),
          () => clearInterval(this.heartbeat),
          () => clearInterval(this.idleTimer),
          () => this.board?.close(),
          () => this.say({ ...this.idleStatus(), state: 'stopped' }),
          () => withTimeout(this.contexts.close(), CLOSE_STEP_MS, 'closing the study contexts'),
          () => withTimeout(this.sessions.close(), CLOSE_STEP_MS, 'releasing the evaluation session'),
          // a clean leave: peers stop asking this worker at once rather than after the entries expire
          () => withTimeout(this.sharing?.holders.leave(), CLOSE_STEP_MS, 'leaving the piece tracker'),
          () => withTimeout(this.sharing?.seeder.close(), CLOSE_STEP_MS, 'stopping serving pieces'),
          () => closeNats(this.nc),
          () => this.releaseCache(),
        ],
        (e) => this.opts.log.debug({ err: (e as Error).message }, 'worker: a close step failed'),
      );
    })();
    return this.closePromise;
  }

  private async run(): Promise<void> {
    const log = this.opts.log.child({ worker: this.id });
    const backoff = new Backoff({ initialMs: 250, maxMs: 5000 });
    let waiting = false;
    let noJetStream = false;
    while (!this.closing) {
      try {
        if (this.board?.stale) {
          log.debug({ err: this.board.stale.message }, 'reading the study buckets afresh');
          this.board.close();
          this.board = undefined;
        }
        if (!this.board) {
          this.board = await StudyBoard.open(this.js);
          this.boardVersion = -1; // a new board counts from 0 again
        }
        const board = this.board;
        noJetStream = false;
        const queues = await this.studyQueues(board, log);
        if (queues.length === 0) {
          if (!waiting) log.info({ nats: this.opts.natsUrl }, 'waiting for a coordinator to announce a study');
          waiting = true;
          await sleep(backoff.next(), this.stopping.signal);
          continue;
        }
        if (waiting) log.info({ studies: queues.map((q) => q.study) }, 'worker ready');
        waiting = false;
        backoff.reset();
        if (!this.capabilities.gpuIdle) {
          // the GPU's owner uses it: take nothing until the idle check says so
          await sleep(this.opts.idlePollMs ?? DEFAULT_IDLE_POLL_MS, this.stopping.signal);
          continue;
        }
        // the study furthest below its fair share first (one whose pool would push a kept one out
        // of the cache limit only when well behind); after a trial the order is taken again
        const displaces = (q: StudyQueue) => {
          const ann = board.announcement(q.study)?.ann;
          return ann != null && this.contexts.displaces(ann);
        };
        const order = queues.length > 1 ? this.fairShare.order(queues, displaces, this.fairShare.switchMargin(this.id)) : queues;
        for (const q of order) {
          if (this.closing || !this.capabilities.gpuIdle) break;
          let msg: JsMsg | null;
          const asked = performance.now();
          try {
            this.flushAck(); // in the same write as the pull
            msg = await this.puller.next(TRIALS_STREAM, workConsumer(q.study), DEFAULT_PULL_EXPIRES_MS);
          } catch (e) {
            // no pull can be made at all (the inbox refused): not one study's fault, the loop backs off
            if (this.puller.failure) throw e;
            // this study's queue went away (the study ended): forget it, keep the others
            this.queues.delete(q.study);
            log.debug({ study: q.study, err: (e as Error).message }, 'cannot pull from a study');
            continue;
          }
          if (!msg) {
            await this.checkQueue(q, log);
            continue;
          }
          this.opts.benchOnDispatch?.(performance.now() - asked);
          if (this.closing || !this.capabilities.gpuIdle) {
            msg.nak();
            break;
          }
          const abort = new AbortController();
          this.current = { msg, abort, handedBack: false, publishing: false };
          await this.handle(msg, board, q.leaseRenewMs, abort.signal, log);
          this.current = undefined;
          break;
        }
      } catch (e) {
        this.current = undefined;
        if (this.closing) break;
        // no coordinator so far (no bucket), or NATS hiccuped, or the server has no JetStream
        this.board?.close();
        this.board = undefined;
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

  /**
   * The work queues of the announced studies: made again when the board changes, and every few
   * seconds (a lock gone quiet is read again, a study whose queue was missing is tried again).
   */
  private async studyQueues(board: StudyBoard, log: Logger): Promise<StudyQueue[]> {
    const due = Date.now() - this.listedAt >= DEFAULT_STUDY_LIST_MS;
    if (!due && board.version === this.boardVersion && this.queues.size > 0) return [...this.queues.values()];
    if (due) await board.recheck();
    // taken before the awaits below: a change meanwhile makes the list again at the next turn
    this.boardVersion = board.version;
    const names = new Set(board.announced());
    for (const study of this.queues.keys())
      if (!names.has(study)) {
        this.queues.delete(study);
        log.info({ study }, 'the study is no longer announced; not taking its proposals');
      }
    const held = board.held();
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
      const known = board.announcement(study);
      const ann = known?.ann ?? null;
      if (ann && this.refuses(ann, log)) continue;
      const had = this.queues.get(study);
      if (had && had.revision === known?.revision) continue; // as it was when its lease was read
      try {
        // read again at each revision: a rerun of the study may have changed its lease
        const consumer = had?.consumer ?? (await this.js.consumers.get(TRIALS_STREAM, workConsumer(study)));
        const info = await consumer.info(false);
        if (!had) log.debug({ study }, 'serving a study');
        this.queues.set(study, {
          study,
          consumer,
          leaseRenewMs: leaseRenewMs(info),
          priority: ann?.priority || 1,
          revision: known?.revision ?? 0,
          checkedAt: Date.now(),
        });
      } catch (e) {
        this.queues.delete(study);
        log.debug({ study, err: (e as Error).message }, 'a study has no work queue yet');
      }
    }
    this.listedAt = Date.now();
    this.followStatuses(this.queues.size > 1);
    return [...this.queues.values()];
  }

  /**
   * After a pull that brought nothing, reads the queue's consumer again every few seconds: a pull
   * from a consumer deleted under it only ever comes back empty (the server does not say).
   */
  private async checkQueue(q: StudyQueue, log: Logger): Promise<void> {
    if (Date.now() - q.checkedAt < DEFAULT_STUDY_LIST_MS) return;
    q.checkedAt = Date.now();
    try {
      const info = await q.consumer.info(false);
      q.leaseRenewMs = leaseRenewMs(info);
    } catch (e) {
      this.queues.delete(q.study);
      log.debug({ study: q.study, err: (e as Error).message }, 'cannot pull from a study');
    }
  }

  /**
   * Whether this worker must not take the study's trials (its requirements, the operator's
   * limits, a pool refused as too big for the cache); the study's queue is dropped then.
   */
  private refuses(ann: StudyAnnouncement, log: Logger): boolean {
    const why = whyNotServe(ann, this.capabilities, this.limits);
    if (why) {
      this.queues.delete(ann.study);
      if (this.skipped.get(ann.study) !== why) log.info({ study: ann.study, reason: why }, 'not serving this study');
      this.skipped.set(ann.study, why);
      return true;
    }
    this.skipped.delete(ann.study);
    if (this.refused.get(ann.study) === ann.manifest.sha256) {
      this.queues.delete(ann.study); // said when it was refused; a new pool is tried again
      return true;
    }
    return false;
  }

  /**
   * Hears the mesh's statuses only while the fair share needs them (several studies served):
   * every worker hears every status, two per trial. Counted afresh when it starts listening, as
   * by a worker just started: counts frozen meanwhile would skew the order.
   */
  private followStatuses(on: boolean): void {
    if (on === (this.statuses !== undefined)) return;
    if (!on) {
      this.statuses?.unsubscribe();
      this.statuses = undefined;
      return;
    }
    this.fairShare = new FairShare();
    this.statuses = this.nc.subscribe(subjects.workers, {
      callback: (err, m) => {
        if (err) return;
        // a malformed status is ignored here (the coordinator logs it)
        const a = workerActivity(m.data);
        if (a) this.observe(a);
      },
    });
  }

  /** Runs the idle check (one at a time); when the GPU's owner needs it, a running trial goes back. */
  private async checkIdle(): Promise<void> {
    if (!this.idle || this.checkingIdle || this.closing) return;
    this.checkingIdle = true;
    try {
      const idleNow = await this.idle();
      if (idleNow !== this.capabilities.gpuIdle) {
        this.opts.log.info({ worker: this.id }, idleNow ? 'GPU idle: taking trials' : 'GPU in use by its owner: taking no trials');
        this.capabilities.gpuIdle = idleNow;
        this.setStatus({ ...this.status, capabilities: this.capabilities });
      }
      if (!idleNow) this.handBack();
    } finally {
      this.checkingIdle = false;
    }
  }

  /**
   * Gives the trial in hand back at once: its work stops and JetStream redelivers the proposal
   * now (a nak without delay) to another worker. It is the same attempt: the coordinator counts
   * attempts itself (a new one only on a timeout or a retryable error), never JetStream's
   * deliveries, so a handed-back trial is neither an attempt nor a failure.
   */
  private handBack(): void {
    const job = this.current;
    if (!job || job.handedBack || job.publishing) return;
    job.handedBack = true;
    job.abort.abort();
    job.msg.nak();
    // the trial is another's now: a heartbeat still saying busy on it (until the evaluation sees
    // the abort) would tell the coordinator that this worker took it back from the next one
    this.setStatus(this.idleStatus());
    this.opts.log.info(
      { worker: this.id, subject: job.msg.subject, seq: job.msg.seq },
      'handing the running trial back: the GPU owner needs it',
    );
  }

  /** What a worker of the mesh (this one included) works on: the fair share counts the trials started. */
  private observe(a: WorkerActivity): void {
    if (a.state === 'stopped') this.fairShare.forget(a.worker);
    else this.fairShare.observe(a.worker, a.study, a.job);
  }

  private async handle(msg: JsMsg, board: StudyBoard, leaseRenewMs: number, signal: AbortSignal, log: Logger): Promise<void> {
    let p: Proposal;
    try {
      p = proposalCodec.decode(msg.data, `proposal ${msg.subject}#${msg.seq}`);
    } catch (e) {
      log.warn({ err: (e as Error).message }, 'dropping a malformed proposal');
      msg.term();
      return;
    }
    const plog = log.child({ study: p.study, trial: p.kind === 'TRIAL' ? p.trial : p.label, attempt: p.attempt });
    const known = await board.forProposal(p);
    if (!known) {
      plog.warn('no announcement for this study yet; returning the proposal');
      msg.nak(2000);
      return;
    }
    const ann = known.ann;
    if (!ann) {
      plog.warn({ err: known.error?.message }, 'the study announcement is malformed; returning the proposal');
      msg.nak(5000);
      return;
    }
    if (p.generation !== ann.generation) {
      plog.info({ generation: p.generation, current: ann.generation }, 'dropping a proposal of an earlier run of the study');
      msg.term();
      return;
    }
    if (this.refuses(ann, plog)) {
      // pulled just before a revision (new requirements) reached this worker: another takes it now
      msg.nak();
      return;
    }
    // handed back while the announcement was read (the GPU's owner came back): another's now
    if (signal.aborted) return;
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
      // echoed: the coordinator takes a result only with its proposal's token
      ...(p.token ? { token: p.token } : {}),
      worker: this.id,
      timings,
      provider,
    };
    let result: Result;
    try {
      const t0 = performance.now();
      const bench = this.opts.benchFixedEvalMs;
      const scores = bench === undefined ? await this.evaluate(ann, p, provider, timings, signal) : await benchScores(bench, ann, signal);
      result = { ...base, scores, error: null };
      this.throughput.add(
        performance.now() - t0,
        scores.reduce((n, s) => n + s.tokens, 0),
        timings.evalMs || (bench ?? 0),
      );
      if (bench === undefined) plog.info({ timings, scores: result.scores.map((s) => s.score) }, 'evaluated');
    } catch (e) {
      if (signal.aborted) return; // close() or the GPU's owner gave the proposal back; a result now would only be dropped
      if (isOptimerError(e) && e.code === 'CACHE_TOO_SMALL') {
        // not the trial's fault: another worker takes it, and this one stops pulling the study
        this.refused.set(p.study, ann.manifest.sha256);
        this.queues.delete(p.study);
        plog.warn({ err: e.message }, 'refusing a study whose pool does not fit in the cache; handing the proposal back');
        msg.nak();
        return;
      }
      const code = isOptimerError(e) ? e.code : 'RUNTIME';
      // what a retry can fix is the error's to say: an unexpected exception may be transient
      const retryable = isOptimerError(e) ? e.retryable : true;
      plog.warn({ err: (e as Error).message, code, retryable }, 'evaluation failed');
      result = { ...base, scores: [], error: { code, message: (e as Error).message, retryable } };
    } finally {
      clearInterval(renew);
      this.capabilities.trialsPerMinute = this.throughput.trialsPerMinute;
      this.capabilities.tokensPerSecond = this.throughput.tokensPerSecond;
      this.setStatus(this.idleStatus());
    }
    // close() or the GPU's owner gave the proposal back; a late result would only be dropped
    if (this.closing || signal.aborted) return;
    if (this.current) this.current.publishing = true;
    // one result per proposal message and worker: a retried publish is de-duplicated by JetStream
    await publishWithRetry(this.js, subjects.results(p.study), resultCodec.encode(result), {
      msgID: `${p.study}.${msg.seq}.${this.id}`,
      signal: this.stopping.signal,
    });
    this.ackSoon(msg);
  }

  /** Fetches what the study needs (once), merges the proposal's weights, evaluates them. */
  private async evaluate(
    ann: StudyAnnouncement,
    p: Proposal,
    provider: ExecutionProvider,
    timings: Result['timings'],
    signal: AbortSignal,
  ): Promise<Result['scores']> {
    const t0 = performance.now();
    const ctx = await this.contexts.get(ann, signal);
    signal.throwIfAborted();
    const t1 = performance.now();
    const weighting = perVectorGenome(Object.keys(p.weights)).weighting(p.weights);
    const sets = p.kind === 'TRIAL' ? ctx.dev : ctx.test;
    const { value: scores, timings: merge } = await this.sessions.run(
      ctx.pool,
      ctx.graphs,
      weighting, // unknown vector → BAD_ARGUMENT
      {
        provider,
        ...(this.opts.weightFeed ? { weightFeed: this.opts.weightFeed } : {}),
        mergeThreads: this.opts.mergeThreads ?? availableParallelism(),
        ...(this.opts.intraOpThreads ? { intraOpThreads: this.opts.intraOpThreads } : {}),
      },
      ({ session, io, weights }) => evaluateSession(session, sets, io, ann.batchTokens, signal, weights),
      signal,
    );
    const t3 = performance.now();
    // session creation counts as evaluation, as it did when every trial made one
    Object.assign(timings, { fetchMs: t1 - t0, mergeMs: merge.mergeMs, evalMs: t3 - t1 - merge.mergeMs });
    return scores.map((s) => ({ name: s.name, score: s.score, tokens: s.tokens }));
  }

  /**
   * Acks a worked proposal (its result is stored) with the next pull, in the same write to the
   * socket, or at the end of this turn of the event loop when no pull comes first.
   */
  private ackSoon(msg: JsMsg): void {
    this.flushAck();
    this.pendingAck = msg;
    setImmediate(() => this.flushAck());
  }

  private flushAck(): void {
    const msg = this.pendingAck;
    this.pendingAck = undefined;
    try {
      msg?.ack();
    } catch (e) {
      // the connection is closed (this runs from setImmediate too, where a throw would end the
      // process): the proposal comes back after its lease, and its result is already stored
      this.opts.log.debug({ worker: this.id, err: (e as Error).message }, 'cannot ack a worked proposal');
    }
  }

  private setStatus(s: WorkerStatus): void {
    this.status = s;
    this.say(s);
  }

  /** Tells the mesh what this worker does (core NATS: a lost message is replaced by the next). */
  private say(s: WorkerStatus): void {
    try {
      // the cache and the transfers as they are now, whatever else changed
      this.nc.publish(subjects.workers, workerStatusCodec.encode({ ...s, ...this.cacheStatus }));
    } catch {
      // closed or reconnecting: the next heartbeat says it again
    }
  }
}

/** How often in-progress acks keep a proposal's lease: a third of the consumer's ack wait (ns). */
function leaseRenewMs(info: ConsumerInfo): number {
  return Math.max(200, (info.config.ack_wait ?? 30e9) / 1e6 / 3);
}

/** For bench/control-plane only: a fixed wait and a made-up score, no merge and no evaluation. */
async function benchScores(ms: number, ann: StudyAnnouncement, signal: AbortSignal): Promise<Result['scores']> {
  if (ms > 0) await sleep(ms, signal);
  signal.throwIfAborted();
  return ann.sets.map((s) => ({ name: s.name, score: 1, tokens: 0 }));
}

function idle(worker: string, provider: string, heartbeatMs: number): WorkerStatus {
  return { worker, state: 'idle', provider, study: '', generation: 0, kind: 'TRIAL', trial: 0, attempt: 0, heartbeatMs };
}
