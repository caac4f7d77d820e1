import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from 'nats';
import { pino } from 'pino';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { requestFullStatus } from '../coordinator/index.js';
import { MemoryStudyStore } from '../coordinator/store/memory-store.js';
import { silentLogger } from '../shared/logging.js';
import { Bitfield } from '../shared/pieces.js';
import { buildPool } from '../shared/pool/build.js';
import { MANIFEST_FILE, readManifest, SHARDS_DIR } from '../shared/pool/manifest.js';
import { Pool } from '../shared/pool/reader.js';
import { holderCodec, holderKey, HOLDERS_BUCKET } from '../shared/wire.js';
import { Worker, type WorkerOptions } from '../worker/worker.js';
import { useNatsServer } from './helpers/nats.js';
import { type FetchCall, startFakePeer } from './helpers/fake-peer.js';
import { startInProcessStudy } from './helpers/in-process.js';
import { useTempDir } from './helpers/temp.js';
import { waitFor } from './helpers/wait.js';

const family = inject('family');
const tmp = useTempDir('cache');
const nats = useNatsServer();
const closers: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const c of closers.reverse()) await c().catch(() => undefined);
});

/** A pool of the family cut into shards and pieces of the given sizes: other sizes, other blobs. */
async function piecedPool(dir: string, shardBytes: number, pieceBytes: number) {
  await buildPool({
    base: family.base,
    vectors: Object.entries(family.checkpoints).map(([name, path]) => ({ name, path })),
    out: dir,
    shardBytes,
    pieceBytes,
  });
  const pool = new Pool(await readManifest(dir), join(dir, SHARDS_DIR), 'pool');
  return { shards: pool.allShards(), manifestBytes: (await stat(join(dir, MANIFEST_FILE))).size };
}

/** The evaluation sets a study over the family uses: every dev and test file (their blobs are shared by both pools' studies). */
async function setBytes(): Promise<number> {
  const files = [...Object.values(family.dev), ...Object.values(family.test)];
  return (await Promise.all(files.map((f) => stat(f)))).reduce((n, s) => n + s.size, 0);
}

const startStudy = (name: string, poolDir: string, trials: number, store?: MemoryStudyStore) =>
  startInProcessStudy({ family, natsUrl: nats.url, dir: tmp, closers }, name, poolDir, trials, store);

/** An in-process worker whose log lines the test reads. */
async function startWorker(id: string, extra: Partial<WorkerOptions> = {}): Promise<{ worker: Worker; log: string[]; dir: string }> {
  const log: string[] = [];
  const dir = join(tmp, 'caches', id);
  const worker = await Worker.start({
    natsUrl: nats.url,
    cacheDir: dir,
    id,
    log: pino({ level: 'info' }, { write: (s: string) => void log.push(s) }),
    heartbeatMs: 200,
    ...extra,
  });
  closers.push(() => worker.close());
  return { worker, log, dir };
}

async function holderKeysOf(id: string): Promise<string[]> {
  const nc = await connect({ servers: nats.url });
  try {
    const kv = await nc.jetstream().views.kv(HOLDERS_BUCKET, { bindOnly: true });
    const hex = Buffer.from(id).toString('hex');
    // a set: kv.keys() lists a key twice when it is put again during the listing (a holder's refresh)
    const out = new Set<string>();
    for await (const k of await kv.keys()) if (k.endsWith(`.${hex}`)) out.add(k.slice(0, 64));
    return [...out].sort();
  } finally {
    await nc.close();
  }
}

async function filesIn(dir: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const name of await readdir(dir)) if (/^[0-9a-f]{64}$/.test(name)) out.set(name, (await stat(join(dir, name))).size);
  return out;
}

describe('worker cache limit', () => {
  it('cache - a worker with a small limit runs two studies over different pools one after the other: the first pool is evicted (not the blobs in use, nor those both use) and withdrawn from the holder tracker', async () => {
    const a = await piecedPool(join(tmp, 'pool-a'), 8192, 1024);
    const b = await piecedPool(join(tmp, 'pool-b'), 16384, 2048);
    const sets = await setBytes();
    const need = (p: typeof a) => p.manifestBytes + p.shards.reduce((n, s) => n + s.bytes, 0) + sets;
    const shaA = new Set(a.shards.map((s) => s.sha256));
    const shaB = new Set(b.shards.map((s) => s.sha256));
    const onlyA = [...shaA].filter((s) => !shaB.has(s));
    const shared = [...shaA].filter((s) => shaB.has(s));
    expect(onlyA.length).toBeGreaterThanOrEqual(3);
    // room for either study, not for both
    const limit = Math.max(need(a), need(b)) + 512;
    expect(need(a) + need(b) - shared.reduce((n, s) => n + a.shards.find((x) => x.sha256 === s)!.bytes, 0) - sets).toBeGreaterThan(limit);

    const { worker, log, dir } = await startWorker('small-cache', { cacheMaxBytes: limit });
    const first = await startStudy('cache-a', join(tmp, 'pool-a'), 3);
    await first.done();
    expect(first.complete).toBe(true);
    await first.close(); // its announcement goes: the worker keeps the pool ready all the same
    const afterA = await filesIn(dir);
    for (const s of shaA) expect(afterA.has(s)).toBe(true);
    const piecedA = a.shards.filter((s) => s.pieces).map((s) => s.sha256);
    await waitFor(
      async () => piecedA.every((s) => afterA.has(s)) && (await holderKeysOf('small-cache')).length === piecedA.length,
      5000,
      'pool A announced',
    );

    const second = await startStudy('cache-b', join(tmp, 'pool-b'), 3);
    await second.done();
    expect(second.complete).toBe(true);
    const afterB = await filesIn(dir);
    // every blob the second study uses is there, and so are those both pools share (the graph, the sets)
    for (const s of shaB) expect(afterB.has(s), `pool B blob ${s.slice(0, 12)}`).toBe(true);
    for (const s of shared) expect(afterB.has(s)).toBe(true);
    const evicted = onlyA.filter((s) => !afterB.has(s));
    expect(evicted.length).toBeGreaterThan(0);
    // under the limit, partial files included (none left: every transfer finished)
    const used = (await readdir(dir)).filter((n) => !n.startsWith('.worker-'));
    const usedBytes = (await Promise.all(used.map((n) => stat(join(dir, n))))).reduce((n, s) => n + s.size, 0);
    expect(usedBytes).toBeLessThanOrEqual(limit);
    // the tracker lists exactly the pieced blobs still held: the evicted ones are withdrawn
    const pieced = new Set([...a.shards, ...b.shards].filter((s) => s.pieces).map((s) => s.sha256));
    const held = [...pieced].filter((s) => afterB.has(s)).sort();
    await waitFor(
      async () => JSON.stringify(await holderKeysOf('small-cache')) === JSON.stringify(held),
      5000,
      'evicted blobs withdrawn',
    ).catch(async (e) => {
      throw new Error(
        `${(e as Error).message}: tracker ${JSON.stringify(await holderKeysOf('small-cache'))}, held ${JSON.stringify(held)}`,
      );
    });
    const status = worker.cacheStatus.cache;
    expect(status).toMatchObject({ limitBytes: limit, blobs: afterB.size, usedBytes });
    expect(status.evictedBlobs).toBeGreaterThanOrEqual(evicted.length);
    // it said why: the kept study was let go, and what was evicted
    expect(log.some((l) => l.includes('letting the kept study cache-a go'))).toBe(true);
    expect(log.some((l) => /cache: evicted \d+ least recently used files/.test(l))).toBe(true);
    await worker.close();
  });

  it('cache - two studies at once whose pools do not fit together: the worker runs one for a while, then the other, not a pool fetch per trial', async () => {
    const a = await piecedPool(join(tmp, 'pool-d'), 8192, 1024);
    const b = await piecedPool(join(tmp, 'pool-e'), 16384, 2048);
    const sets = await setBytes();
    const need = (p: typeof a) => p.manifestBytes + p.shards.reduce((n, s) => n + s.bytes, 0) + sets;
    const limit = Math.max(need(a), need(b)) + 512;
    const { worker, log } = await startWorker('switching', { cacheMaxBytes: limit });
    const trials = 16;
    const stores = [new MemoryStudyStore(), new MemoryStudyStore()] as const;
    const studies = [
      await startStudy('switch-a', join(tmp, 'pool-d'), trials, stores[0]),
      await startStudy('switch-b', join(tmp, 'pool-e'), trials, stores[1]),
    ];
    await Promise.all(studies.map((s) => s.done()));
    expect(studies.every((s) => s.complete)).toBe(true);
    for (const [i, store] of stores.entries()) {
      const jobs = await store.listJobs(studies[i]!.name, 'TRIAL');
      expect(jobs.length).toBe(trials);
      expect(jobs.every((t) => t.state === 'complete')).toBe(true);
    }
    // the pools were let go and fetched again a few times, not at every other trial (about 2 × 16)
    const loads = log.filter((l) => l.includes('"msg":"study ready"')).length;
    const letGo = log.filter((l) => l.includes('letting the kept study switch-')).length;
    expect(loads).toBeGreaterThanOrEqual(2);
    expect(loads, `${loads} loads, ${letGo} let go`).toBeLessThanOrEqual(8);
    expect(letGo).toBe(loads - 1);
    await worker.close();
    await Promise.all(studies.map((s) => s.close()));
  });

  it('cache - a study whose pool and sets exceed the limit is refused with the sizes, and another worker runs it', async () => {
    const p = await piecedPool(join(tmp, 'pool-c'), 8192, 1024);
    const need = p.manifestBytes + p.shards.reduce((n, s) => n + s.bytes, 0) + (await setBytes());
    const small = await startWorker('too-small', { cacheMaxBytes: Math.floor(need / 2) });
    const store = new MemoryStudyStore();
    const study = await startStudy('cache-c', join(tmp, 'pool-c'), 3, store);
    const refusal = await waitFor(
      () => small.log.find((l) => l.includes('CACHE_TOO_SMALL') || l.includes('does not fit')),
      30_000,
      'the refusal',
    );
    expect(refusal).toMatch(/study cache-c: its pool and sets need .*(KiB|B) .*limited to .*--cache-max-gb/);
    const big = await startWorker('big-enough');
    await study.done();
    expect(study.complete).toBe(true);
    const trials = await store.listJobs('cache-c', 'TRIAL');
    expect(trials.length).toBe(3);
    expect(trials.every((t) => t.state === 'complete' && t.attempts.at(-1)?.worker === 'big-enough')).toBe(true);
    expect(trials.every((t) => t.attempt === 1)).toBe(true);
    // it fetched the manifest only, never a shard
    expect(small.worker.transfers.pieces).toBe(0);
    await Promise.all([small.worker.close(), big.worker.close()]);
  });

  it('cache - a worker with a limit refuses a cache folder another worker uses, naming it', async () => {
    const { worker: sharer, dir } = await startWorker('sharer');
    await expect(
      Worker.start({ natsUrl: nats.url, cacheDir: dir, id: 'limited', log: silentLogger(), cacheMaxBytes: 1 << 30 }),
    ).rejects.toThrow(/is used by worker sharer \(pid \d+ on .*\).*needs a folder no other worker uses/);
    // a worker without a limit may share it, as `optimer run`'s local workers do
    const other = await Worker.start({ natsUrl: nats.url, cacheDir: dir, id: 'sharer-2', log: silentLogger() });
    await Promise.all([other.close(), sharer.close()]); // no worker of this test takes the next test's trials
  });
});

describe('transfers in the status', () => {
  it('cache - a status read during a transfer shows its progress (bytes done of total, rate, peers and coordinator); after it, the cache figures', async () => {
    const poolDir = join(tmp, 'pool-x');
    const { shards } = await piecedPool(poolDir, 8192, 1024);
    const target = shards.filter((s) => s.pieces).sort((x, y) => y.bytes - x.bytes)[0]!;
    expect(target.pieces!.pieces.length).toBeGreaterThanOrEqual(4);
    // a peer holding the first three pieces of one shard: it answers its first request at once,
    // the others after 3 s, so that transfer lasts a while with bytes from both sides
    let requests = 0;
    const port = await startFakePeer(async (call: FetchCall) => {
      const { sha256, offset, length } = call.request;
      const bytes = await readFile(join(poolDir, SHARDS_DIR, sha256));
      if (requests++ > 0) await new Promise((r) => setTimeout(r, 3000));
      if (call.cancelled) return;
      call.write({ data: bytes.subarray(offset, length ? offset + length : undefined) });
      call.end();
    }, closers);
    const nc = await connect({ servers: nats.url });
    closers.push(() => nc.close());
    const kv = await nc.jetstream().views.kv(HOLDERS_BUCKET, { ttl: 30_000, history: 1 });
    const have = new Bitfield(target.pieces!.pieces.length);
    for (const i of [0, 1, 2]) have.set(i);
    await kv.put(
      holderKey(target.sha256, 'slow'),
      holderCodec.encode({ address: `127.0.0.1:${port}`, pieces: have.size, have: have.bytes, seeding: new Uint8Array(0) }),
    );

    const limit = 1 << 30;
    const { worker, log, dir } = await startWorker('watched', { cacheMaxBytes: limit });
    const study = await startStudy('cache-x', poolDir, 3);
    const blob = target.sha256.slice(0, 12);
    const seen: string[] = [];
    const during = await waitFor(
      async () => {
        const st = await requestFullStatus(nats.url, 'cache-x', { timeoutMs: 2000 }).catch(() => null);
        const w = st?.workers.find((x) => x.id === 'watched');
        if (w?.transfers.length) seen.push(JSON.stringify(w.transfers));
        const t = w?.transfers.find((x) => x.blob === blob && x.fromPeers > 0 && x.fromCoordinator > 0);
        return t && w ? { w, t } : undefined;
      },
      30_000,
      `a status showing the transfer of ${blob}`,
    ).catch((e) => {
      throw new Error(`${(e as Error).message}; seen ${seen.join('\n')}\nlog ${log.join('')}`);
    });
    expect(during.t.bytes).toBe(target.bytes);
    expect(during.t.doneBytes).toBeGreaterThan(0);
    expect(during.t.doneBytes).toBeLessThanOrEqual(target.bytes);
    expect(during.t.doneBytes).toBe(during.t.fromPeers + during.t.fromCoordinator);
    // the first piece from the peer at once, the other two only after 3 s
    expect([1024, 2048, 3072]).toContain(during.t.fromPeers);
    expect(during.t.peers).toBe(1);
    expect(during.t.seconds).toBeGreaterThan(0);
    expect(during.t.bytesPerSecond).toBeGreaterThan(0);
    expect(during.w.cache).toMatchObject({ limitBytes: limit });
    expect(during.w.cache!.pinnedBytes).toBeGreaterThan(0);

    await study.done();
    expect(study.complete).toBe(true);
    const files = await filesIn(dir);
    const after = await waitFor(
      async () => {
        const st = await requestFullStatus(nats.url, 'cache-x', { timeoutMs: 2000 });
        const w = st.workers.find((x) => x.id === 'watched');
        return w?.transfers.length === 0 && w.cache?.blobs === files.size ? w : undefined;
      },
      10_000,
      'a status after the transfers',
    );
    const total = [...files.values()].reduce((n, b) => n + b, 0);
    expect(after.cache).toMatchObject({ usedBytes: total, limitBytes: limit, blobs: files.size, evictedBlobs: 0 });
    // the worker's log said when the transfer started and how it ended: size, seconds, rate, bytes from peers
    expect(log.some((l) => l.includes(`fetching blob ${blob}`))).toBe(true);
    const done = JSON.parse(log.find((l) => l.includes(`fetched blob ${blob}`))!);
    // the three pieces the peer holds came from it (the first at once, two after 3 s), the rest from the coordinator
    expect(done).toMatchObject({ blob, bytes: target.bytes, fromPeers: 3 * 1024, fromSeeders: target.bytes - 3 * 1024, peers: 1 });
    expect(done.seconds).toBeGreaterThan(2.5);
    expect(done.bytesPerSecond).toBeGreaterThan(0);
    expect(done.msg).toMatch(/in \d+\.\d+ s \(.*\/s\), 3\.00 KiB from 1 peer, .* from the coordinator/);
    await worker.close();
  });
});
