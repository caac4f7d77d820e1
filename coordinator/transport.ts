import {
  AckPolicy,
  type ConsumerConfig,
  type ConsumerMessages,
  DeliverPolicy,
  type JetStreamClient,
  type JetStreamManager,
  type KV,
  type NatsConnection,
  nanos,
  RetentionPolicy,
  type StreamConfig,
  StorageType,
  type Subscription,
} from 'nats';
import {
  announcementCodec,
  closeNats,
  connectNats,
  DEFAULT_DUPLICATE_WINDOW_MS,
  DEFAULT_RESULT_ACK_WAIT_MS,
  DEFAULT_RESULT_BATCH,
  DEFAULT_RESULT_PULL_EXPIRES_MS,
  DEFAULT_RESULT_PULL_HEARTBEAT_MS,
  DEFAULT_RESULTS_MAX_AGE_MS,
  explainNoJetStream,
  HOLDER_TTL_MS,
  HOLDERS_BUCKET,
  LEGACY_WORK_CONSUMER,
  LOCKS_BUCKET,
  type Proposal,
  proposalCodec,
  publishWithRetry,
  RESULTS_STREAM,
  resultsConsumer,
  STUDIES_BUCKET,
  type StudyAnnouncement,
  subjects,
  TRIALS_STREAM,
  workConsumer,
} from '../shared/index.js';
import { StudyLock, type StudyLockOptions } from './study-lock.js';

/**
 * One study's side of NATS: the shared streams (created or updated on start), the study's own
 * work consumer (its lease; the count of workers waiting for its proposals), its results
 * consumer, and its announcement in the key-value bucket. Nothing here knows about trials.
 */
export class StudyTransport {
  private constructor(
    readonly study: string,
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly kv: KV,
    private readonly lock: StudyLock,
  ) {}

  /** Connects and sets up the streams, the study's consumers and the announcement bucket. */
  static async open(o: {
    natsUrl: string;
    study: string;
    ackWaitSeconds: number;
    fresh: boolean;
    /** JetStream copies of the streams and buckets (a cluster's replication factor) */
    replicas?: number;
    lock?: StudyLockOptions;
  }): Promise<StudyTransport> {
    const nc = await connectNats(o.natsUrl, `optimer-coordinator-${o.study}`);
    let lock: StudyLock | undefined;
    try {
      const jsm = await nc.jetstreamManager();
      const js = nc.jetstream();
      // one coordinator per study on this NATS, before anything of the study's is touched
      const num_replicas = o.replicas ?? 1;
      lock = await StudyLock.acquire(js, o.study, { ...o.lock, replicas: num_replicas });
      const dup = nanos(DEFAULT_DUPLICATE_WINDOW_MS);
      const file = StorageType.File;
      await ensureStream(jsm, {
        name: TRIALS_STREAM,
        subjects: [subjects.allTrials],
        retention: RetentionPolicy.Workqueue,
        storage: file,
        duplicate_window: dup,
        num_replicas,
      });
      await ensureStream(jsm, {
        name: RESULTS_STREAM,
        subjects: [subjects.allResults],
        retention: RetentionPolicy.Limits,
        storage: file,
        duplicate_window: dup,
        max_age: nanos(DEFAULT_RESULTS_MAX_AGE_MS),
        num_replicas,
      });
      // a work queue takes no overlapping consumers: the old all-studies one must go
      await jsm.consumers.delete(TRIALS_STREAM, LEGACY_WORK_CONSUMER).catch(() => false);
      await ensureConsumer(jsm, TRIALS_STREAM, {
        durable_name: workConsumer(o.study),
        ack_policy: AckPolicy.Explicit,
        ack_wait: nanos(o.ackWaitSeconds * 1000),
        max_deliver: -1, // the coordinator's attempts and timeouts bound the work, not JetStream
        filter_subject: subjects.trials(o.study),
      });
      if (o.fresh) {
        await jsm.streams.purge(TRIALS_STREAM, { filter: subjects.trials(o.study) });
        await jsm.streams.purge(RESULTS_STREAM, { filter: subjects.results(o.study) });
      }
      await ensureConsumer(jsm, RESULTS_STREAM, {
        durable_name: resultsConsumer(o.study),
        ack_policy: AckPolicy.Explicit,
        ack_wait: nanos(DEFAULT_RESULT_ACK_WAIT_MS),
        deliver_policy: DeliverPolicy.All,
        filter_subject: subjects.results(o.study),
      });
      const kv = await js.views.kv(STUDIES_BUCKET, { history: 1, replicas: num_replicas });
      // the piece tracker's bucket, which workers write: created here with the study's copies, so
      // it survives a node like the rest (made by a worker that came first, it has one copy)
      await js.views.kv(HOLDERS_BUCKET, { history: 1, ttl: HOLDER_TTL_MS, replicas: num_replicas });
      // buckets made earlier (by a worker, or a run with fewer --nats-replicas) get their copies too
      for (const bucket of [LOCKS_BUCKET, STUDIES_BUCKET, HOLDERS_BUCKET]) await ensureReplicas(jsm, `KV_${bucket}`, num_replicas);
      return new StudyTransport(o.study, nc, js, jsm, kv, lock);
    } catch (e) {
      await lock?.release();
      await nc.close().catch(() => undefined);
      // a server without JetStream answers every JetStream request with a bare '503'
      throw explainNoJetStream(e, o.natsUrl);
    }
  }

  /** Tells workers what the study needs (sets, seeders, provider); returns its revision in the bucket. */
  async announce(a: StudyAnnouncement): Promise<number> {
    return this.kv.put(this.study, announcementCodec.encode(a));
  }

  /** A complete study is taken off the board: workers stop pulling its (empty) queue. */
  async withdrawAnnouncement(): Promise<void> {
    await this.kv.delete(this.study);
  }

  /** Proposals in the study's queue not yet taken, and workers waiting for one. */
  async queue(): Promise<{ pending: number; waiting: number }> {
    const info = await this.jsm.consumers.info(TRIALS_STREAM, workConsumer(this.study));
    return { pending: info.num_pending, waiting: info.num_waiting };
  }

  /** Publishes a proposal; `msgID` makes a repeat (after a crash or a retry) a no-op. */
  async publish(p: Proposal, msgID: string, signal?: AbortSignal): Promise<{ seq: number; duplicate: boolean }> {
    const ack = await publishWithRetry(this.js, subjects.trials(this.study), proposalCodec.encode(p), {
      msgID,
      ...(signal ? { signal } : {}),
    });
    return { seq: ack.seq, duplicate: ack.duplicate };
  }

  /** Whether the proposal at `seq` is still in the queue (waiting, or held by a worker's lease). */
  async queued(seq: number): Promise<boolean> {
    try {
      await this.jsm.streams.getMessage(TRIALS_STREAM, { seq });
      return true;
    } catch (e) {
      if ((e as { code?: string }).code === '404') return false; // no message (or no stream): not there
      throw e;
    }
  }

  /** Deletes a superseded proposal from the queue; gone already is fine. */
  async withdraw(seq: number): Promise<void> {
    await this.jsm.streams.deleteMessage(TRIALS_STREAM, seq, false).catch(() => false);
  }

  /** The study's results, in order, until stopped. */
  async results(): Promise<ConsumerMessages> {
    const consumer = await this.js.consumers.get(RESULTS_STREAM, resultsConsumer(this.study));
    // bound to the consumer: on missed heartbeats it pulls again at once, rather than first asking
    // for the consumer's info (which waits out a timeout while a cluster elects the consumer's leader)
    return consumer.consume({
      max_messages: DEFAULT_RESULT_BATCH,
      expires: DEFAULT_RESULT_PULL_EXPIRES_MS,
      idle_heartbeat: DEFAULT_RESULT_PULL_HEARTBEAT_MS,
      bind: true,
    });
  }

  /** Worker status messages of the whole mesh, each handed to `onStatus` as it comes. */
  workerStatuses(onStatus: (data: Uint8Array) => void): Subscription {
    return this.nc.subscribe(subjects.workers, {
      callback: (err, m) => {
        if (!err) onStatus(m.data);
      },
    });
  }

  async close(): Promise<void> {
    // the study is free at once for the next coordinator (bounded: NATS may be gone)
    await Promise.race([this.lock.release(), new Promise((r) => setTimeout(r, 2000).unref())]);
    // bounded: a drain while the server is gone would otherwise never end
    await closeNats(this.nc);
  }
}

/**
 * Creates the stream, or updates it to `cfg`; never to fewer copies than it has: the streams are
 * shared by every study on this NATS, and another coordinator may have asked for more.
 */
async function ensureStream(jsm: JetStreamManager, cfg: Partial<StreamConfig> & { name: string }): Promise<void> {
  try {
    const info = await jsm.streams.info(cfg.name);
    await jsm.streams.update(cfg.name, { ...cfg, num_replicas: Math.max(cfg.num_replicas ?? 1, info.config.num_replicas) });
  } catch (e) {
    if (!/not found/i.test((e as Error).message)) throw e;
    await jsm.streams.add(cfg);
  }
}

/** Raises a stream's copies to `replicas` (never lowers them: see ensureStream). */
async function ensureReplicas(jsm: JetStreamManager, stream: string, replicas: number): Promise<void> {
  const info = await jsm.streams.info(stream);
  if (info.config.num_replicas < replicas) await jsm.streams.update(stream, { num_replicas: replicas });
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
