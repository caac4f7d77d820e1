import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  HOLDER_TTL_MS,
  HOLDERS_BUCKET,
  LOCKS_BUCKET,
  RESULTS_STREAM,
  resultsConsumer,
  STUDIES_BUCKET,
  subjects,
  TRIALS_STREAM,
  type WorkerStatus,
  workerStatusCodec,
} from '../../shared/wire.js';
import { ChaosNats, checkInvariants } from '../helpers/chaos.js';
import { exited, outputOf, Processes } from '../helpers/study.js';
import { useTempDir } from '../helpers/temp.js';
import { waitFor } from '../helpers/wait.js';
import { chaosStudy } from './setup.js';

const family = inject('family');
const cli = inject('cli');
const tmp = useTempDir('chaos-cluster');
const procs = new Processes();
let nodes: ChaosNats[] = [];
beforeAll(async () => {
  nodes = await ChaosNats.cluster(join(tmp, 'nats'));
});
afterEach(() => procs.stopAll());
afterAll(async () => {
  await procs.stopAll();
  await Promise.all(nodes.map((n) => n.kill('SIGTERM')));
});

/** The node leading `stream` (or its `consumer`), once it has one, and its copies. */
async function leaderOf(nc: NatsConnection, stream: string, consumer?: string): Promise<{ leader: string; replicas: number }> {
  const jsm = await nc.jetstreamManager({ checkAPI: false });
  return waitFor(
    async () => {
      const info = await (consumer ? jsm.consumers.info(stream, consumer) : jsm.streams.info(stream)).catch(() => undefined);
      const leader = info?.cluster?.leader;
      return leader ? { leader, replicas: info.config.num_replicas ?? 0 } : undefined;
    },
    30_000,
    `a leader for ${stream} ${consumer ?? ''}`,
  );
}

/** Resolves once a worker's status matches (statuses are plain NATS: no lag behind the worker). */
async function untilStatus(nc: NatsConnection, match: (s: WorkerStatus) => boolean, timeoutMs: number, what: string): Promise<void> {
  const sub = nc.subscribe(subjects.workers);
  const t = setTimeout(() => sub.unsubscribe(), timeoutMs);
  try {
    for await (const m of sub) {
      try {
        if (match(workerStatusCodec.decode(m.data, 'status'))) return;
      } catch {
        // not a status
      }
    }
  } finally {
    clearTimeout(t);
    sub.unsubscribe();
  }
  throw new Error(`no ${what} within ${timeoutMs} ms`);
}

describe('chaos - a three-node JetStream cluster', () => {
  it('chaos - the node leading the results consumer SIGKILLed mid-study (R3 streams, clients given all three URLs): the study completes on two nodes within 30 s, a worker started after the kill joins', async () => {
    const budget = 24;
    const config = await chaosStudy(family, tmp, 'cluster', { trials: budget, repeat: 6 });
    const storeDir = join(tmp, 'store-cluster');
    const urls = nodes.map((n) => n.url).join(',');
    const nc = await connect({ servers: nodes.map((n) => n.url) });
    let victim: ChaosNats | undefined;
    let coordinator: ReturnType<Processes['start']>;
    try {
      // the piece tracker's bucket with one copy, as a worker that came before any coordinator
      // leaves it (retried: a fresh cluster elects its JetStream leaders first)
      await waitFor(
        () =>
          nc
            .jetstream()
            .views.kv(HOLDERS_BUCKET, { ttl: HOLDER_TTL_MS, history: 1 })
            .then(() => true)
            .catch(() => false),
        30_000,
        'JetStream on the cluster',
      );
      coordinator = procs.start(cli, [
        'run',
        config,
        '--nats',
        urls,
        '--nats-replicas',
        '3',
        '--workers',
        '0',
        '--store',
        storeDir,
        '--json',
      ]);
      await leaderOf(nc, TRIALS_STREAM);
      procs.startWorkers(cli, urls, join(tmp, 'cache-cluster'), 2);
      await untilStatus(
        nc,
        (s) => s.state === 'busy' && s.study === 'cluster' && s.kind === 'TRIAL' && s.trial >= 3,
        45_000,
        'worker busy on trial 3 or later',
      );
      // every stream and bucket optimer uses has three copies, the tracker's included
      const jsm = await nc.jetstreamManager();
      for (const stream of [TRIALS_STREAM, RESULTS_STREAM, ...[STUDIES_BUCKET, LOCKS_BUCKET, HOLDERS_BUCKET].map((b) => `KV_${b}`)])
        expect([stream, (await jsm.streams.info(stream)).config.num_replicas]).toEqual([stream, 3]);
      // the node leading the coordinator's results consumer: its pull is lost with it
      const { leader } = await leaderOf(nc, RESULTS_STREAM, resultsConsumer('cluster'));
      victim = nodes.find((n) => n.name === leader);
      expect(victim, `the leader ${leader} is one of ours`).toBeDefined();
      await victim!.kill('SIGKILL');
    } finally {
      await nc.close();
    }
    const killedAt = Date.now();
    // a worker started now, the dead node listed last, connects: a client tries every URL it is
    // given (a comma-separated --nats once reached only its last URL)
    const survivors = nodes.filter((n) => n !== victim);
    const lateUrls = [...survivors, victim!].map((n) => n.url).join(',');
    const watch = await connect({ servers: survivors.map((n) => n.url) });
    try {
      const joined = untilStatus(watch, (s) => s.worker === 'late', 30_000, 'status from the worker started after the kill');
      procs.start(cli, [
        'worker',
        '--nats',
        lateUrls,
        '--cache',
        join(tmp, 'cache-cluster', 'late'),
        '--id',
        'late',
        '--log-level',
        'warn',
      ]);
      await joined;
    } finally {
      await watch.close();
    }
    // the study recovers in seconds: a results pull lost with the node that led its consumer is
    // noticed after two missed heartbeats (with nats.js's 30 s default pull, not before the trials
    // had timed out, 40 s and more)
    const code = await exited(coordinator!, Math.max(0, killedAt + 30_000 - Date.now())).catch((e: Error) => {
      throw new Error(`${e.message}\n${outputOf(coordinator!).err.slice(-3000)}`);
    });
    expect(code, outputOf(coordinator!).err.slice(-3000)).toBe(0);
    const trials = await checkInvariants({
      storeDir,
      study: 'cluster',
      budget,
      state: 'complete',
      natsUrl: survivors.map((n) => n.url).join(','),
      gone: [victim!.pid, coordinator!.pid!],
      maxAttempts: 3,
    });
    // the study went on after the kill: trials finished on the two nodes left
    expect(trials.filter((t) => Date.parse(t.finishedAt ?? '') > killedAt).length).toBeGreaterThan(0);
  }, 90_000);
});
