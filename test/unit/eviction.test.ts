import { mkdtemp, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { renderStatus } from '../../cli/commands/study.js';
import { workerViews } from '../../coordinator/status/status.js';
import { WorkerTracker } from '../../coordinator/worker-tracker.js';
import { silentLogger } from '../../shared/logging.js';
import { workerStatusCodec, type WorkerStatus } from '../../shared/wire.js';
import { CacheSpace } from '../../worker/shards/cache-space.js';
import { type CacheFile, classifyCacheFile, planEviction } from '../../worker/shards/eviction.js';

const sha = (c: string) => c.repeat(64);
const blob = (c: string, bytes: number, usedMs: number): CacheFile => ({ name: sha(c), blob: sha(c), kind: 'blob', bytes, usedMs });
const none = () => false;

describe('cache eviction', () => {
  it('cache eviction - nothing goes while the files and the blob arriving fit', () => {
    const plan = planEviction([blob('a', 40, 1), blob('b', 40, 2)], none, 100, 20);
    expect(plan).toEqual({ evict: [], usedBytes: 80, pinnedBytes: 0, afterBytes: 100, fits: true });
  });

  it('cache eviction - the least recently used go first, only as many as make room; pinned files never', () => {
    const files = [blob('a', 30, 5), blob('b', 30, 1), blob('c', 30, 3), blob('d', 30, 2)];
    const pinned = (f: CacheFile) => f.blob === sha('b');
    const plan = planEviction(files, pinned, 100, 30);
    // 120 + 30 must come down to 100: b is the oldest but pinned, so d (2) then c (3)
    expect(plan.evict.map((f) => f.blob[0])).toEqual(['d', 'c']);
    expect(plan).toMatchObject({ usedBytes: 120, pinnedBytes: 30, afterBytes: 90, fits: true });
  });

  it('cache eviction - when the pinned files and the blob arriving exceed the limit, every unpinned file goes and the plan says it does not fit', () => {
    const files = [blob('a', 60, 1), blob('b', 50, 2), blob('c', 10, 3)];
    const plan = planEviction(files, (f) => f.blob !== sha('c'), 100, 20);
    expect(plan.evict.map((f) => f.blob[0])).toEqual(['c']);
    expect(plan).toMatchObject({ pinnedBytes: 110, afterBytes: 130, fits: false });
    // nothing unpinned at all: nothing to evict, still does not fit
    expect(planEviction(files, () => true, 100)).toMatchObject({ evict: [], fits: false });
  });

  it('cache eviction - partial and temporary files count, and at equal age go before complete blobs; then by name', () => {
    const files: CacheFile[] = [
      blob('b', 10, 7),
      { name: `.part-${sha('a')}`, blob: sha('a'), kind: 'partial', bytes: 10, usedMs: 7 },
      { name: `.tmp-${'c'.repeat(16)}-000000000000`, blob: 'c'.repeat(16), kind: 'temp', bytes: 10, usedMs: 7 },
      blob('0', 10, 7),
    ];
    const plan = planEviction(files, none, 15);
    expect(plan.usedBytes).toBe(40);
    expect(plan.evict.map((f) => f.kind)).toEqual(['partial', 'temp', 'blob']);
    expect(plan.evict[2]!.blob).toBe(sha('0'));
  });

  it('cache eviction - file names: blobs, partial files (with or without an owner), temporary files; anything else is not the cache', () => {
    expect(classifyCacheFile(sha('a'))).toEqual({ blob: sha('a'), kind: 'blob' });
    expect(classifyCacheFile(`.part-${sha('b')}`)).toEqual({ blob: sha('b'), kind: 'partial' });
    expect(classifyCacheFile(`.part-${sha('b')}-0123456789ab`)).toEqual({ blob: sha('b'), kind: 'partial' });
    expect(classifyCacheFile(`.tmp-${'c'.repeat(16)}-0123456789ab`)).toEqual({ blob: 'c'.repeat(16), kind: 'temp' });
    for (const other of ['.worker-0123456789ab.json', 'manifest.json', sha('A'), `${sha('a')}x`])
      expect(classifyCacheFile(other)).toBeNull();
  });
});

describe('cache space', () => {
  const dirs: string[] = [];
  afterAll(() => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

  it('cache space - a pass deletes the least recently used unpinned files, counts partial files, and reports each evicted blob', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'optimer-space-'));
    dirs.push(dir);
    const write = async (name: string, bytes: number, ageS: number) => {
      await writeFile(join(dir, name), Buffer.alloc(bytes));
      const t = Date.now() / 1000 - ageS;
      await utimes(join(dir, name), t, t);
    };
    await write(sha('a'), 300, 50); // oldest, but pinned
    await write(sha('b'), 300, 40);
    await write(`.part-${sha('c')}-0123456789ab`, 300, 30); // an interrupted transfer
    await write(sha('d'), 300, 10);
    await write('.worker-0123456789ab.json', 5000, 60); // not the cache's: never counted nor deleted
    const evicted: string[] = [];
    const space = new CacheSpace(dir, 1000, silentLogger(), (s) => evicted.push(s));
    await space.scan();
    expect(space.usage()).toMatchObject({ usedBytes: 1200, blobs: 3, limitBytes: 1000, pinnedBytes: 0 });
    const unpin = space.pin(sha('a'));
    expect(space.usage().pinnedBytes).toBe(300);
    space.touch(sha('b')); // b used now: d and the partial are older
    await space.makeRoom(sha('e'), 300);
    const left = (await readdir(dir)).sort();
    expect(left).toEqual([sha('a'), sha('b'), '.worker-0123456789ab.json'].sort());
    expect(evicted).toEqual([sha('d')]); // the partial file was never announced as a blob
    expect(space.usage()).toMatchObject({ usedBytes: 600, evictedBlobs: 1, evictedBytes: 600 });
    // pinned and over the limit: nothing in use goes
    await space.makeRoom(sha('f'), 900);
    expect((await readdir(dir)).includes(sha('a'))).toBe(true);
    expect((await readdir(dir)).includes(sha('b'))).toBe(false);
    unpin();
    await space.makeRoom(sha('g'), 900);
    expect((await readdir(dir)).filter((n) => classifyCacheFile(n))).toEqual([]);
    expect((await stat(join(dir, '.worker-0123456789ab.json'))).size).toBe(5000);
  });

  it('cache space - without a limit nothing is evicted, and the files are counted all the same', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'optimer-space-'));
    dirs.push(dir);
    await writeFile(join(dir, sha('a')), Buffer.alloc(700));
    const space = new CacheSpace(dir, Number.POSITIVE_INFINITY, silentLogger(), () => undefined);
    await space.scan();
    await space.makeRoom(sha('b'), 1e12);
    expect(await readdir(dir)).toEqual([sha('a')]);
    expect(space.usage()).toMatchObject({ usedBytes: 700, blobs: 1, limitBytes: 0 });
  });
});

describe('cache and transfers in the status', () => {
  it('cache status - a worker status with its cache and a transfer survives the wire and reaches the study status and its text', () => {
    const s: WorkerStatus = {
      worker: 'w1',
      state: 'busy',
      provider: 'cpu',
      study: 's',
      generation: 1,
      kind: 'TRIAL',
      trial: 3,
      attempt: 1,
      heartbeatMs: 1000,
      cache: { usedBytes: 3 * 2 ** 30, limitBytes: 4 * 2 ** 30, blobs: 12, pinnedBytes: 2 ** 30, evictedBlobs: 2, evictedBytes: 2 ** 20 },
      transfers: [
        {
          blob: 'ab12cd34ef56',
          bytes: 64 * 2 ** 20,
          doneBytes: 16 * 2 ** 20,
          bytesPerSecond: 8 * 2 ** 20,
          fromPeers: 12 * 2 ** 20,
          fromSeeders: 4 * 2 ** 20,
          peers: 2,
          seconds: 2,
        },
      ],
    };
    const decoded = workerStatusCodec.decode(workerStatusCodec.encode(s), 'status');
    expect(decoded.cache).toEqual(s.cache);
    expect(decoded.transfers).toEqual(s.transfers);
    // an older worker's status has neither
    const { cache: _c, transfers: _t, ...old } = s;
    const oldDecoded = workerStatusCodec.decode(workerStatusCodec.encode(old), 'status');
    expect(oldDecoded.cache ?? null).toBeNull();
    expect(oldDecoded.transfers ?? []).toEqual([]);

    const tracker = new WorkerTracker(3);
    tracker.heard(decoded, 0);
    tracker.heard({ ...oldDecoded, worker: 'w0', cache: { ...s.cache!, limitBytes: 0 }, transfers: [] }, 0);
    const views = workerViews([], [], { workers: tracker.list(), nowMs: 500 });
    const w1 = views.find((w) => w.id === 'w1')!;
    expect(w1.cache).toMatchObject({ usedBytes: 3 * 2 ** 30, limitBytes: 4 * 2 ** 30, blobs: 12 });
    const { fromSeeders, ...t } = s.transfers![0]!;
    expect(w1.transfers).toEqual([{ ...t, fromCoordinator: fromSeeders }]);
    expect(views.find((w) => w.id === 'w0')!.cache!.limitBytes).toBeNull();

    const summary = { mesh: { workers: 2, busy: 1, idle: 1, lost: 0 } };
    const text = renderStatus({ summary: summaryStub(summary), workers: views } as never, { kind: 'nats', url: 'nats://x' } as never);
    expect(text).toContain('3.00 GiB / 4.00 GiB, 12 blobs, 2 evicted');
    expect(text).toContain('/ no limit, 12 blobs');
    expect(text).toMatch(
      /w1 fetching ab12cd34ef56: 16\.0 MiB of 64\.0 MiB \(25%\), 8\.00 MiB\/s, 12\.0 MiB from 2 peers, 4\.00 MiB from the coordinator/,
    );
  });
});

/** The fields renderStatus reads of a summary, the rest neutral. */
function summaryStub(extra: Record<string, unknown>) {
  return {
    study: 's',
    state: 'running',
    phase: 'trials',
    progress: { phase: 'trials', done: 1, total: 4 },
    trials: { budget: 4, created: 2, complete: 1, failed: 0, running: 1 },
    tests: { total: 0, complete: 0, failed: 0, running: 0 },
    failure: null,
    best: null,
    eta: null,
    metric: 'nll',
    ...extra,
  };
}
