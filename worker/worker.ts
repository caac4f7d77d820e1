import { hostname } from 'node:os';
import { mkdir, readFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { connect, type Consumer, type JetStreamClient, type JsMsg, type KV, type NatsConnection } from 'nats';
import {
  announcementCodec,
  type ExecutionProvider,
  isOptimerError,
  type LoadedEvalSet,
  type Logger,
  OptimerError,
  parseManifest,
  perVectorGenome,
  Pool,
  type Proposal,
  proposalCodec,
  readEvalSet,
  type Result,
  resultCodec,
  STUDIES_BUCKET,
  type StudyAnnouncement,
  subjects,
  TRIALS_STREAM,
  WORKERS_CONSUMER,
} from '../shared/index.js';
import { mergeInto } from './merge/merge.js';
import { createMergedSession } from './eval/session.js';
import { evaluateSession } from './eval/evaluate.js';
import { BlobCache } from './shards/fetch.js';

export interface WorkerOptions {
  natsUrl: string;
  /** content-addressed cache of shards, manifests and evaluation sets */
  cacheDir: string;
  id?: string;
  /** overrides the study's preferred execution provider */
  provider?: ExecutionProvider;
  log: Logger;
}

/** Everything a worker prepares once per study (and generation): pool, sets, merge buffer. */
interface StudyContext {
  key: string;
  announcement: StudyAnnouncement;
  pool: Pool;
  graph: Uint8Array;
  dev: LoadedEvalSet[];
  test: LoadedEvalSet[];
  buffer: Uint8Array;
}

/** Error codes that no retry can fix: the proposal or the study's inputs are wrong. */
const PERMANENT = new Set(['BAD_POOL', 'BAD_EVAL_SET', 'BAD_ARGUMENT', 'BAD_MESSAGE', 'BAD_ONNX']);

/**
 * A worker: pulls proposals from the JetStream work queue, fetches what it lacks over gRPC
 * (verified by sha256), merges, evaluates with ONNX Runtime, publishes the result, then acks.
 * While it works it keeps its lease with in-progress acks; if it dies, JetStream redelivers the
 * proposal to another worker after the lease runs out.
 */
export class Worker {
  readonly id: string;
  private closing = false;
  private loop: Promise<void> | undefined;
  private context: StudyContext | undefined;
  private current: JsMsg | undefined;
  private closePromise: Promise<void> | undefined;
  private readonly cache: BlobCache;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly opts: WorkerOptions,
  ) {
    this.id = opts.id ?? `${hostname()}-${process.pid}-${randomBytes(2).toString('hex')}`;
    this.cache = new BlobCache(opts.cacheDir);
  }

  static async start(opts: WorkerOptions): Promise<Worker> {
    await mkdir(opts.cacheDir, { recursive: true });
    let nc: NatsConnection;
    try {
      nc = await connect({ servers: opts.natsUrl, name: 'optimer-worker', maxReconnectAttempts: -1, reconnectTimeWait: 500 });
    } catch (e) {
      throw new OptimerError('TRANSPORT', `cannot connect to NATS at ${opts.natsUrl}: ${(e as Error).message}`, {
        cause: e,
        retryable: true,
      });
    }
    const w = new Worker(nc, nc.jetstream(), opts);
    w.loop = w.run();
    return w;
  }

  /** Resolves when the worker has stopped (after close(), or a fatal error). */
  closed(): Promise<void> {
    return this.loop ?? Promise.resolve();
  }

  /** Stops taking work, gives an unfinished proposal back to the queue, disconnects. Idempotent. */
  close(): Promise<void> {
    this.closePromise ??= (async () => {
      this.closing = true;
      const msg = this.current;
      if (msg) msg.nak(); // redeliver now rather than after the lease
      await this.loop?.catch(() => undefined);
      await this.context?.pool.close().catch(() => undefined);
      this.cache.close();
      await this.nc.drain().catch(() => undefined);
    })();
    return this.closePromise;
  }

  private async run(): Promise<void> {
    const log = this.opts.log.child({ worker: this.id });
    let consumer: Consumer | undefined;
    let kv: KV | undefined;
    let heartbeatMs = 5000;
    let backoff = 250;
    while (!this.closing) {
      try {
        if (!consumer || !kv) {
          consumer = await this.js.consumers.get(TRIALS_STREAM, WORKERS_CONSUMER);
          const info = await consumer.info(true);
          heartbeatMs = Math.max(200, (info.config.ack_wait ?? 30e9) / 1e6 / 3);
          kv = await this.js.views.kv(STUDIES_BUCKET, { bindOnly: true });
          log.info({ heartbeatMs }, 'worker ready');
        }
        const msg = await consumer.next({ expires: 1000 });
        if (!msg) continue;
        if (this.closing) {
          msg.nak();
          break;
        }
        this.current = msg;
        await this.handle(msg, kv, heartbeatMs, log);
        this.current = undefined;
        backoff = 250;
      } catch (e) {
        this.current = undefined;
        if (this.closing) break;
        // the queue or the bucket does not exist yet (no coordinator so far), or NATS hiccuped
        consumer = undefined;
        kv = undefined;
        log.debug({ err: (e as Error).message }, 'waiting for a coordinator');
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 5000);
      }
    }
  }

  private async handle(msg: JsMsg, kv: KV, heartbeatMs: number, log: Logger): Promise<void> {
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
    const heartbeat = setInterval(() => msg.working(), heartbeatMs);
    const timings = { fetchMs: 0, mergeMs: 0, evalMs: 0 };
    const provider = this.opts.provider ?? ((ann.provider || 'cpu') as ExecutionProvider);
    const base: Omit<Result, 'scores' | 'error'> = {
      study: p.study,
      generation: p.generation,
      kind: p.kind,
      trial: p.trial,
      label: p.label,
      attempt: p.attempt,
      worker: this.id,
      timings,
      provider,
    };
    let result: Result;
    try {
      const t0 = performance.now();
      const ctx = await this.prepare(ann);
      const t1 = performance.now();
      const weighting = perVectorGenome(Object.keys(p.weights)).weighting(p.weights);
      const merged = await mergeInto(ctx.pool, weighting, ctx.buffer); // unknown vector → BAD_ARGUMENT
      const t2 = performance.now();
      const session = await createMergedSession(ctx.graph, merged, provider);
      let scores: Awaited<ReturnType<typeof evaluateSession>>;
      try {
        scores = await evaluateSession(session, p.kind === 'TRIAL' ? ctx.dev : ctx.test, ctx.pool.manifest.model, ann.batchTokens);
      } finally {
        await session.release();
      }
      const t3 = performance.now();
      Object.assign(timings, { fetchMs: t1 - t0, mergeMs: t2 - t1, evalMs: t3 - t2 });
      result = { ...base, scores: scores.map((s) => ({ name: s.name, score: s.score, tokens: s.tokens })), error: null };
      plog.info({ timings, scores: result.scores.map((s) => s.score) }, 'evaluated');
    } catch (e) {
      const code = isOptimerError(e) ? e.code : 'RUNTIME';
      const retryable = !PERMANENT.has(code);
      plog.warn({ err: (e as Error).message, code, retryable }, 'evaluation failed');
      result = { ...base, scores: [], error: { code, message: (e as Error).message, retryable } };
    } finally {
      clearInterval(heartbeat);
    }
    if (this.closing) return; // close() gave the proposal back; a late result would only be dropped
    await this.publishResult(result, p, msg.seq);
    msg.ack();
  }

  private async publishResult(r: Result, p: Proposal, proposalSeq: number): Promise<void> {
    const data = resultCodec.encode(r);
    // one result per proposal message and worker: a retried publish is de-duplicated by JetStream
    const msgID = `${p.study}.${proposalSeq}.${this.id}`;
    for (let i = 0; ; i++) {
      try {
        await this.js.publish(subjects.results(p.study), data, { msgID, timeout: 5000 });
        return;
      } catch (e) {
        if (i >= 10 || this.closing) throw e;
        await sleep(Math.min(5000, 200 * 2 ** i)); // NATS restarting: a publish is not buffered
      }
    }
  }

  /** Fetches (once) what a study needs: manifest, pool shards, evaluation sets. */
  private async prepare(ann: StudyAnnouncement): Promise<StudyContext> {
    const key = `${ann.study}:${ann.generation}:${ann.manifest.sha256}`;
    if (this.context?.key === key) return this.context;
    await this.context?.pool.close();
    this.context = undefined;
    const seeders = ann.seeders;
    const manifestPath = await this.cache.ensure(ann.manifest.sha256, ann.manifest.bytes, seeders);
    const manifest = parseManifest(JSON.parse(await readFile(manifestPath, 'utf8')), `manifest ${ann.manifest.sha256.slice(0, 12)}`);
    const pool = new Pool(manifest, this.cache.dir, `pool ${ann.manifest.sha256.slice(0, 12)}`);
    for (const s of pool.allShards()) await this.cache.ensure(s.sha256, s.bytes, seeders);
    const loadSets = async (which: 'dev' | 'test'): Promise<LoadedEvalSet[]> => {
      const out: LoadedEvalSet[] = [];
      for (const s of ann.sets) {
        const ref = s[which];
        if (!ref.sha256) continue;
        const path = await this.cache.ensure(ref.sha256, ref.bytes, seeders);
        out.push({ name: s.name, path, weight: s.weight, seqs: await readEvalSet(path, manifest.model) });
      }
      return out;
    };
    this.context = {
      key,
      announcement: ann,
      pool,
      graph: await pool.graphBytes(),
      dev: await loadSets('dev'),
      test: await loadSets('test'),
      buffer: new Uint8Array(manifest.weightsBytes),
    };
    return this.context;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
