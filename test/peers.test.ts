import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from 'nats';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { MemoryStudyStore } from '../coordinator/store/memory-store.js';
import { grpc, ShardServiceClient } from '../shared/grpc.js';
import { silentLogger } from '../shared/logging.js';
import { Bitfield } from '../shared/pieces.js';
import { buildPool } from '../shared/pool/build.js';
import { readManifest, SHARDS_DIR } from '../shared/pool/manifest.js';
import { Pool } from '../shared/pool/reader.js';
import { Seeder } from '../shared/seeder.js';
import { holderCodec, holderKey, HOLDERS_BUCKET } from '../shared/wire.js';
import { Worker } from '../worker/worker.js';
import { BlobCache } from '../worker/shards/fetch.js';
import { useNatsServer } from './helpers/nats.js';
import { type FetchCall, startFakePeer } from './helpers/fake-peer.js';
import { startInProcessStudy } from './helpers/in-process.js';
import { useTempDir } from './helpers/temp.js';
import { waitFor } from './helpers/wait.js';

const family = inject('family');
const tmp = useTempDir('peers');
const nats = useNatsServer();
const closers: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const c of closers.reverse()) await c().catch(() => undefined);
});

/** The family's pool cut small: several shards of several pieces each, so pieces travel between peers. */
async function smallPiecePool(dir: string) {
  await buildPool({
    base: family.base,
    vectors: Object.entries(family.checkpoints).map(([name, path]) => ({ name, path })),
    out: dir,
    shardBytes: 8192,
    pieceBytes: 1024,
  });
  const pool = new Pool(await readManifest(dir), join(dir, SHARDS_DIR), 'pool');
  const pieced = pool.allShards().filter((s) => s.pieces);
  return { pieced, pieces: pieced.reduce((n, s) => n + s.pieces!.pieces.length, 0) };
}

const startStudy = (name: string, poolDir: string, trials: number, store?: MemoryStudyStore) =>
  startInProcessStudy({ family, natsUrl: nats.url, dir: tmp, closers }, name, poolDir, trials, store);

async function startWorker(id: string): Promise<Worker> {
  const w = await Worker.start({ natsUrl: nats.url, cacheDir: join(tmp, id), id, log: silentLogger() });
  closers.push(() => w.close());
  return w;
}

describe('pieces between peers', () => {
  it('peers - three workers joining one after another get the pool from each other; the coordinator serves each piece at most once; a leaving worker withdraws', async () => {
    const poolDir = join(tmp, 'pool-a');
    const { pieced, pieces } = await smallPiecePool(poolDir);
    expect(pieced.length).toBeGreaterThanOrEqual(5);
    expect(pieces).toBeGreaterThanOrEqual(40);
    const store = new MemoryStudyStore();
    const coordinator = await startStudy('peers-a', poolDir, 300, store); // long enough for the late joiners to take trials
    const w1 = await startWorker('peer-1');
    await waitFor(() => w1.transfers.pieces === pieces, 30_000, 'worker 1 to hold the pool');
    expect(w1.transfers.fromSeeders).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 400)); // its last announcement goes out within 100 ms
    // joining mid-study: the pool comes from the peers, and the new workers take trials
    const w2 = await startWorker('peer-2');
    await waitFor(() => w2.transfers.pieces === pieces, 30_000, 'worker 2 to hold the pool');
    await new Promise((r) => setTimeout(r, 400));
    const w3 = await startWorker('peer-3');
    await waitFor(() => w3.transfers.pieces === pieces, 30_000, 'worker 3 to hold the pool').catch((e) => {
      throw new Error(`${e.message}: ${JSON.stringify(w3.transfers)} of ${pieces}`);
    });
    for (const w of [w2, w3]) {
      expect(w.transfers.fromSeeders).toBe(0);
      expect(w.transfers.fromPeers).toBeGreaterThan(0);
      expect(w.transfers.corrupt + w.transfers.failed).toBe(0);
    }
    await coordinator.done();
    expect(coordinator.complete).toBe(true);
    const served = coordinator.served();
    const pieceRanges = [...served.ranges].filter(([k]) => !k.endsWith(':0'));
    expect(pieceRanges.length).toBe(pieces);
    expect(pieceRanges.every(([, n]) => n === 1)).toBe(true);
    const trials = await store.listJobs('peers-a', 'TRIAL');
    expect(new Set(trials.map((t) => t.attempts.at(-1)?.worker)).has('peer-3')).toBe(true);
    // a clean leave deletes the worker's holder entries
    const nc = await connect({ servers: nats.url });
    closers.push(() => nc.close());
    const kv = await nc.jetstream().views.kv(HOLDERS_BUCKET, { bindOnly: true });
    const keysOf = async (id: string) => {
      const hex = Buffer.from(id).toString('hex');
      // a set: kv.keys() lists a key twice when it is put again during the listing (its ordered
      // consumer delivers until nothing is pending), as a holder's 10 s refresh does
      const out = new Set<string>();
      for await (const k of await kv.keys()) if (k.endsWith(`.${hex}`)) out.add(k);
      return [...out];
    };
    expect((await keysOf('peer-1')).length).toBe(pieced.length);
    await w1.close();
    expect(await keysOf('peer-1')).toEqual([]);
    expect((await keysOf('peer-2')).length).toBe(pieced.length);
    await Promise.all([w2.close(), w3.close()]);
  });

  it('peers - a peer serving corrupted pieces is detected and dropped, another holder used, the study completes', async () => {
    const poolDir = join(tmp, 'pool-b');
    const { pieced } = await smallPiecePool(poolDir);
    // a holder of every piece that flips a byte of each range it serves
    let asked = 0;
    const port = await startFakePeer(async (call: FetchCall) => {
      asked++;
      const { sha256, offset, length } = call.request;
      const bytes = await readFile(join(poolDir, SHARDS_DIR, sha256));
      const data = Buffer.from(bytes.subarray(offset, length ? offset + length : undefined));
      data[0] = data[0]! ^ 0xff;
      call.write({ data });
      call.end();
    }, closers);
    const nc = await connect({ servers: nats.url });
    closers.push(() => nc.close());
    const kv = await nc.jetstream().views.kv(HOLDERS_BUCKET, { ttl: 30_000, history: 1 });
    for (const s of pieced) {
      const have = Bitfield.full(s.pieces!.pieces.length);
      await kv.put(
        holderKey(s.sha256, 'bad'),
        holderCodec.encode({ address: `127.0.0.1:${port}`, pieces: have.size, have: have.bytes, seeding: new Uint8Array(0) }),
      );
    }
    const coordinator = await startStudy('peers-b', poolDir, 10);
    const w = await startWorker('peer-b');
    await coordinator.done();
    expect(coordinator.complete).toBe(true);
    expect(asked).toBeGreaterThan(0);
    // the bad holder is dropped for a blob at its first corrupt piece (others may be in flight then)
    expect(w.transfers.corrupt).toBeGreaterThanOrEqual(pieced.length);
    expect(asked).toBeLessThanOrEqual(4 * pieced.length);
    expect(w.transfers.fromPeers).toBe(0);
    expect(w.transfers.pieces).toBe(pieced.reduce((n, s) => n + s.pieces!.pieces.length, 0));
  });
});

describe('resuming', () => {
  it('peers - an interrupted transfer resumes without fetching its verified pieces again', async () => {
    const data = Buffer.alloc(64 * 1024);
    for (let i = 0; i < data.length; i++) data[i] = (i * 2654435761) >>> 24;
    const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
    const pieceBytes = 4096;
    const pieces = { pieceBytes, pieces: Array.from({ length: 16 }, (_, i) => sha(data.subarray(i * pieceBytes, (i + 1) * pieceBytes))) };
    const src = join(tmp, 'resume-src');
    await writeFile(src, data);
    // a seeder that answers its first four requests, then stalls, as a dying link would (not by
    // offset: the four streams pick pieces at random, and all four first picks in a stalled half
    // left nothing to resume, about one run in 26)
    let answered = 0;
    const port = await startFakePeer((call: FetchCall) => {
      const { offset, length } = call.request;
      if (answered++ >= 4) return; // never answers
      call.write({ data: data.subarray(offset, offset + length) });
      call.end();
    }, closers);
    const dir = join(tmp, 'resume-cache');
    await mkdir(dir);
    const first = new BlobCache(dir);
    const pending = first.ensure(sha(data), data.length, [`127.0.0.1:${port}`], pieces).catch((e: Error) => e);
    await waitFor(() => first.stats.pieces >= 4, 10_000, 'the four pieces the seeder sends');
    await new Promise((r) => setTimeout(r, 300));
    first.close();
    expect(await pending).toBeInstanceOf(Error);
    const held = first.stats.pieces;
    expect(held).toBe(4);
    const parts = (await readdir(dir)).filter((f) => f.startsWith('.part-'));
    expect(parts).toHaveLength(1);
    const partial = await readFile(join(dir, parts[0]!));
    const verified = pieces.pieces.flatMap((h, i) => (sha(partial.subarray(i * pieceBytes, (i + 1) * pieceBytes)) === h ? [i] : []));
    expect(verified.length).toBe(held);

    const seeder = new Seeder(silentLogger());
    seeder.register(sha(data), src);
    const address = await seeder.start('127.0.0.1');
    closers.push(() => seeder.close());
    const second = new BlobCache(dir);
    const path = await second.ensure(sha(data), data.length, [address], pieces);
    expect(sha(await readFile(path))).toBe(sha(data));
    expect(second.stats.resumed).toBe(held);
    expect(second.stats.pieces).toBe(16 - held);
    const served = [...seeder.served().ranges.keys()].map((k) => Number(k.split(':')[1]) / pieceBytes);
    expect(served.sort((a, b) => a - b)).toEqual(Array.from({ length: 16 }, (_, i) => i).filter((i) => !verified.includes(i)));
    expect(await readdir(dir)).toEqual([sha(data)]);
    second.close();
  });

  it('peers - ranges are checked: past the end or a negative length gets OUT_OF_RANGE', async () => {
    const seeder = new Seeder(silentLogger());
    const src = join(tmp, 'range-src');
    const data = Buffer.from('0123456789');
    await writeFile(src, data);
    const sha = createHash('sha256').update(data).digest('hex');
    seeder.register(sha, src);
    const address = await seeder.start('127.0.0.1');
    closers.push(() => seeder.close());
    const cache = new BlobCache(join(tmp, 'range-cache'));
    await mkdir(cache.dir, { recursive: true });
    const bad = { pieceBytes: 8, pieces: ['0'.repeat(64), '0'.repeat(64)] };
    // wrong piece hashes: every piece is refused as corrupt, the only seeder dropped
    await expect(cache.ensure(sha, data.length, [address], bad)).rejects.toThrow(/no holder delivered it/);
    const client = new ShardServiceClient(address, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
      fetch(req: unknown): grpc.ClientReadableStream<unknown>;
    };
    const statusOf = (req: unknown) =>
      new Promise<grpc.ServiceError>((resolve) => {
        const call = client.fetch(req);
        call.on('data', () => undefined);
        call.on('error', resolve);
      });
    expect((await statusOf({ sha256: sha, offset: 4, length: 7 })).code).toBe(grpc.status.OUT_OF_RANGE);
    expect((await statusOf({ sha256: sha, offset: 11, length: 0 })).code).toBe(grpc.status.OUT_OF_RANGE);
    client.close();
    cache.close();
  });
});
