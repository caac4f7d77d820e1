import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AckPolicy, connect, type KV, type NatsConnection, RetentionPolicy } from 'nats';
import { pino } from 'pino';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { Coordinator } from '../coordinator/coordinator.js';
import type { StudyEvent } from '../coordinator/events.js';
import { MemoryStudyStore } from '../coordinator/store/memory-store.js';
import { loadStudyConfig } from '../coordinator/study/config.js';
import { silentLogger } from '../shared/logging.js';
import { startNatsServer } from '../shared/nats-server.js';
import {
  announcementCodec,
  LOCKS_BUCKET,
  STUDIES_BUCKET,
  type StudyAnnouncement,
  subjects,
  TRIALS_STREAM,
  workConsumer,
} from '../shared/wire.js';
import { Worker } from '../worker/index.js';
import { StudyBoard } from '../worker/study-board.js';
import { buildFamilyPool } from './helpers/family.js';
import { useNatsServer } from './helpers/nats.js';
import { writeStudyConfig } from './helpers/study.js';
import { useTempDir } from './helpers/temp.js';
import { waitFor } from './helpers/wait.js';

// A worker keeps the studies' announcements and locks by watching their buckets: what it sees
// must follow every change (revised, locked, unlocked, expired, withdrawn, a reconnect) at once.
const family = inject('family');
const tmp = useTempDir('board');
const nats = useNatsServer();
const closers: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const c of closers.reverse()) await c().catch(() => undefined);
});

const SHA = 'a'.repeat(64);
function announcement(study: string, extra: Partial<StudyAnnouncement> = {}): StudyAnnouncement {
  return {
    study,
    direction: 'minimize',
    manifest: { sha256: SHA, bytes: 1 },
    sets: [{ name: 'dev', metric: 'nll', weight: 1, dev: { sha256: SHA, bytes: 1 }, test: { sha256: '', bytes: 0 } }],
    seeders: ['127.0.0.1:1'],
    provider: '',
    batchTokens: 1024,
    generation: 1,
    requirements: null,
    priority: 1,
    department: '',
    ...extra,
  };
}

/** An in-process worker (8 GB, nothing served) whose log lines the test reads, from `since` on. */
async function startWorker(natsUrl: string, id: string) {
  const lines: { msg: string; study?: string; reason?: string }[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  const worker = await Worker.start({
    natsUrl,
    cacheDir: join(tmp, 'cache', id),
    id,
    log,
    serve: false,
    advertise: { deviceName: 'test', memoryGb: 8 },
  });
  closers.push(() => worker.close());
  const mark = () => lines.length;
  /** waits for a line saying `msg` about `study` (and `reason` containing `about`) after `since` */
  const said = (since: number, msg: string, study: string, about = '') =>
    waitFor(
      () => lines.slice(since).some((l) => l.msg === msg && l.study === study && (l.reason ?? '').includes(about)),
      20_000,
      `worker: '${msg}' about ${study} ${about}`,
    );
  return { worker, lines, mark, said };
}

/** A nats-server of the test's own (its buckets' settings are the test's), stopped after the file. */
async function ownServer(port?: number, dir = mkdtempSync(join(tmpdir(), 'optimer-nats-board-'))) {
  const server = await startNatsServer({ storeDir: dir, ...(port ? { port } : {}) });
  closers.push(async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  return { server, dir };
}

async function connectTo(url: string): Promise<NatsConnection> {
  const nc = await connect({ servers: url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  closers.push(() => nc.close());
  return nc;
}

/** Keeps a study's lock written, as its coordinator does; returns the stop. */
function holdLock(locks: KV, study: string): () => void {
  void locks.put(study, '{}');
  const t = setInterval(() => void locks.put(study, '{}').catch(() => undefined), 300);
  return () => clearInterval(t);
}

describe('study board', () => {
  it('board - a study announced, revised, unlocked, locked again, its lock expired, withdrawn and its queue deleted while a worker runs is seen', async () => {
    const { server } = await ownServer();
    const nc = await connectTo(server.url);
    const js = nc.jetstream();
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({ name: TRIALS_STREAM, subjects: [subjects.allTrials], retention: RetentionPolicy.Workqueue });
    await jsm.consumers.add(TRIALS_STREAM, {
      durable_name: workConsumer('watched'),
      ack_policy: AckPolicy.Explicit,
      filter_subject: subjects.trials('watched'),
    });
    const studies = await js.views.kv(STUDIES_BUCKET, { history: 1 });
    // a short TTL: an expired lock (its coordinator killed) is seen within the test
    const locks = await js.views.kv(LOCKS_BUCKET, { history: 1, ttl: 1500 });
    const w = await startWorker(server.url, 'board-1');

    let release = holdLock(locks, 'watched');
    let at = w.mark();
    await studies.put('watched', announcementCodec.encode(announcement('watched', { requirements: { provider: '', minMemoryGb: 64 } })));
    await w.said(at, 'not serving this study', 'watched', '64 GB');

    // revised (a rerun with other requirements): served
    at = w.mark();
    await studies.put('watched', announcementCodec.encode(announcement('watched', { requirements: { provider: '', minMemoryGb: 4 } })));
    await w.said(at, 'serving a study', 'watched');

    // its coordinator stops (the lock is deleted), then another takes it
    release();
    at = w.mark();
    await locks.delete('watched');
    await w.said(at, 'no coordinator runs this study; not taking its proposals', 'watched');
    at = w.mark();
    release = holdLock(locks, 'watched');
    await w.said(at, 'serving a study', 'watched');

    // its coordinator is killed: the lock is not refreshed and expires without a delete marker
    release();
    at = w.mark();
    await w.said(at, 'no coordinator runs this study; not taking its proposals', 'watched');
    at = w.mark();
    release = holdLock(locks, 'watched');
    await w.said(at, 'serving a study', 'watched');

    // revised again: requirements it does not meet; then withdrawn while served
    at = w.mark();
    await studies.put('watched', announcementCodec.encode(announcement('watched', { requirements: { provider: 'cuda', minMemoryGb: 0 } })));
    await w.said(at, 'not serving this study', 'watched', 'provider cuda');
    at = w.mark();
    await studies.put('watched', announcementCodec.encode(announcement('watched')));
    await w.said(at, 'serving a study', 'watched');
    at = w.mark();
    await studies.delete('watched');
    await w.said(at, 'the study is no longer announced; not taking its proposals', 'watched');

    // announced again, then its work queue deleted under the worker (the server says nothing to a pull)
    at = w.mark();
    await studies.put('watched', announcementCodec.encode(announcement('watched')));
    await w.said(at, 'serving a study', 'watched');
    at = w.mark();
    await jsm.consumers.delete(TRIALS_STREAM, workConsumer('watched'));
    await w.said(at, 'cannot pull from a study', 'watched');
    release();
  }, 60_000);

  it('board - a proposal made under a newer announcement than the local copy, or of another run, is worked under the bucket’s', async () => {
    const { server } = await ownServer();
    const nc = await connectTo(server.url);
    const js = nc.jetstream();
    const studies = await js.views.kv(STUDIES_BUCKET, { history: 1 });
    const first = await studies.put('lag', announcementCodec.encode(announcement('lag')));
    const board = await StudyBoard.open(js);
    expect(board.announcement('lag')?.revision).toBe(first);
    board.close(); // its watches stop: the local copy stands for one the watch has not updated yet
    const needy = announcementCodec.encode(announcement('lag', { requirements: { provider: '', minMemoryGb: 64 } }));
    const second = await studies.put('lag', needy);

    // made under the first announcement (or by an older coordinator, which says none): the local copy
    expect((await board.forProposal({ study: 'lag', generation: 1, announcementRevision: first }))?.revision).toBe(first);
    expect((await board.forProposal({ study: 'lag', generation: 1 }))?.revision).toBe(first);
    // made under the revision: read from the bucket, with its requirements
    const revised = await board.forProposal({ study: 'lag', generation: 1, announcementRevision: second });
    expect(revised?.revision).toBe(second);
    expect(revised?.ann?.requirements?.minMemoryGb).toBe(64);
    // of a run the local copy is not of: read from the bucket too
    const rerun = await studies.put('lag', announcementCodec.encode(announcement('lag', { generation: 2 })));
    expect((await board.forProposal({ study: 'lag', generation: 2 }))?.revision).toBe(rerun);
    await studies.delete('lag');
    expect(await board.forProposal({ study: 'lag', generation: 3 })).toBeNull();
  }, 30_000);

  it('board - after NATS restarts, the worker reads the buckets afresh and sees a revision made after', async () => {
    const first = await ownServer();
    const { dir } = first;
    const { port } = first.server;
    const nc = await connectTo(first.server.url);
    const studies = await nc.jetstream().views.kv(STUDIES_BUCKET, { history: 1 });
    const w = await startWorker(first.server.url, 'board-2');
    let at = w.mark();
    await studies.put('kept', announcementCodec.encode(announcement('kept', { requirements: { provider: '', minMemoryGb: 64 } })));
    await w.said(at, 'not serving this study', 'kept', '64 GB');

    at = w.mark();
    await first.server.stop();
    await ownServer(port, dir); // the same address and store
    await waitFor(() => w.lines.slice(at).some((l) => l.msg === 'reading the study buckets afresh'), 20_000, 'a new board');
    const revised = announcementCodec.encode(announcement('kept', { requirements: { provider: '', minMemoryGb: 32 } }));
    // JetStream may still be starting
    await waitFor(
      () =>
        studies.put('kept', revised).then(
          () => true,
          () => false,
        ),
      20_000,
      'the revision written',
    );
    await w.said(at, 'not serving this study', 'kept', '32 GB');
  }, 60_000);

  it('board - new requirements stop a worker taking a running study’s trials; lifted, it takes them again', async () => {
    const poolDir = join(tmp, 'pool');
    await buildFamilyPool(family, poolDir);
    const w = await startWorker(nats.url, 'board-3');
    const start = async (name: string, trials: number, events: StudyEvent[]) => {
      const c = await Coordinator.start({
        config: await loadStudyConfig(
          await writeStudyConfig(join(tmp, `${name}.json`), family, poolDir, { name, trials, baselines: false }),
        ),
        store: new MemoryStudyStore(),
        natsUrl: nats.url,
        log: silentLogger(),
        onEvent: (e) => events.push(e),
      });
      closers.push(() => c.close());
      return c;
    };
    const a: StudyEvent[] = [];
    await start('needy', 500, a);
    const completed = () => a.filter((e) => e.type === 'trial.completed').length;
    await waitFor(() => completed() >= 2, 60_000, 'trials of needy');

    // the study is revised as a resume with new requirements would (same run, a new revision)
    const nc = await connectTo(nats.url);
    const studies = await nc.jetstream().views.kv(STUDIES_BUCKET, { bindOnly: true });
    const original = (await studies.get('needy'))!.value;
    const ann = announcementCodec.decode(original, 'announcement');
    const at = w.mark();
    await studies.put('needy', announcementCodec.encode({ ...ann, requirements: { provider: '', minMemoryGb: 64 } }));
    await w.said(at, 'not serving this study', 'needy', '64 GB');
    const before = completed();

    // the worker keeps working (another study's trials), but not the revised study's
    const b: StudyEvent[] = [];
    const other = await start('other', 3, b);
    await other.done();
    expect(completed()).toBeLessThanOrEqual(before + 1); // at most the trial it held when the revision came

    await studies.put('needy', original);
    const resumed = completed();
    await waitFor(() => completed() > resumed + 1, 60_000, 'needy served again');
  }, 120_000);
});
