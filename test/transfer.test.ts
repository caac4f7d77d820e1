import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { createServer, connect, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Seeder } from '../shared/seeder.js';
import { BlobCache } from '../worker/shards/fetch.js';
import { grpc, pieceClientOptions, ShardServiceClient, shardServiceDefinition } from '../shared/grpc.js';
import { silentLogger } from '../shared/logging.js';
import { useTempDir } from './helpers/temp.js';

const tmp = useTempDir('transfer');
const seeder = new Seeder(silentLogger());
afterAll(() => seeder.close());

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe('shard transfer over gRPC', () => {
  it('transfer - a blob larger than one chunk arrives intact and is verified', async () => {
    const data = Buffer.alloc(3 * 1024 * 1024 + 17);
    for (let i = 0; i < data.length; i++) data[i] = (i * 2654435761) >>> 24;
    const src = join(tmp, 'blob');
    await writeFile(src, data);
    seeder.register(sha(data), src);
    const address = await seeder.start('127.0.0.1');
    await mkdir(join(tmp, 'cache'));
    const cache = new BlobCache(join(tmp, 'cache'));
    const path = await cache.ensure(sha(data), data.length, [address]);
    expect(sha(await readFile(path))).toBe(sha(data));
    cache.close();
  });

  it('transfer - a blob whose bytes do not match its hash never enters the cache', async () => {
    const claimed = Buffer.from('the real content');
    const other = join(tmp, 'tampered');
    await writeFile(other, 'something else!!');
    seeder.register(sha(claimed), other);
    const cache = new BlobCache(join(tmp, 'cache'));
    await expect(cache.ensure(sha(claimed), claimed.length, [seeder.address])).rejects.toThrow(/no seeder delivered it .*hashing to/);
    expect(await cache.has(sha(claimed), claimed.length)).toBe(false);
    // an unknown hash is refused by the seeder; a bad address falls through to the next seeder
    await expect(cache.ensure('0'.repeat(64), 5, [seeder.address])).rejects.toThrow(/not served here/);
    const good = Buffer.from('fallback works');
    const p = join(tmp, 'good');
    await writeFile(p, good);
    seeder.register(sha(good), p);
    await expect(cache.ensure(sha(good), good.length, ['127.0.0.1:1', seeder.address])).resolves.toBe(cache.path(sha(good)));
    cache.close();
  });
});

describe('shard transfer, cancelled', () => {
  it('transfer - closing the cache cancels a transfer in progress and leaves no partial file', async () => {
    // a seeder that sends one chunk and then stalls, as a peer on a dying link would
    const server = new grpc.Server();
    server.addService(shardServiceDefinition, {
      fetch: (call: grpc.ServerWritableStream<unknown, { data: Uint8Array }>) => {
        call.write({ data: Buffer.alloc(1024, 7) });
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
    );
    const dir = join(tmp, 'cache-cancel');
    await mkdir(dir);
    const cache = new BlobCache(dir);
    const started = Date.now();
    const pending = cache.ensure('a'.repeat(64), 1 << 20, [`127.0.0.1:${port}`]);
    const outcome = pending.then(
      () => 'resolved',
      (e: Error) => e.message,
    );
    await new Promise((r) => setTimeout(r, 300));
    cache.close();
    expect(await outcome).toMatch(/no seeder delivered it .*cancel/i);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(await readdir(dir)).toEqual([]);
    server.forceShutdown();
  });
});

describe('shard transfer, upload slots', () => {
  it('transfer - a seeder with every upload slot taken answers busy at once, serves whole blobs all the same, and frees the slot of a cancelled call', async () => {
    const data = Buffer.alloc(32 * 1024 * 1024, 3);
    const small = Buffer.from('a whole blob, not a piece');
    await writeFile(join(tmp, 'slots-blob'), data);
    await writeFile(join(tmp, 'slots-small'), small);
    const limited = new Seeder(silentLogger(), 1);
    limited.register(sha(data), join(tmp, 'slots-blob'));
    limited.register(sha(small), join(tmp, 'slots-small'));
    const address = await limited.start('127.0.0.1');
    // gRPC's default window (64 KiB): a client that does not read holds the seeder's writes, and its slot
    const client = new ShardServiceClient(address, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
      fetch(req: unknown): grpc.ClientReadableStream<{ data: Buffer }>;
    };
    /** the bytes a call delivered, or its error */
    const read = (sha256: string, offset: number, length: number) =>
      new Promise<{ bytes: number } | { code: number; details: string }>((resolve) => {
        let bytes = 0;
        const c = client.fetch({ sha256, offset, length });
        c.on('data', (m: { data: Buffer }) => {
          bytes += m.data.length;
        });
        c.on('error', (e: grpc.ServiceError) => resolve({ code: e.code, details: e.details }));
        c.on('end', () => resolve({ bytes }));
      });
    try {
      const slow = client.fetch({ sha256: sha(data), offset: 0, length: data.length });
      slow.pause();
      // the first call holds the one slot once its bytes start flowing
      await new Promise<void>((resolve) => slow.once('metadata', () => resolve()));
      const refused = await read(sha(data), 0, 1024);
      expect(refused).toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED, details: expect.stringMatching(/^busy/) });
      expect(limited.served().busy).toBe(1);
      expect(await read(sha(small), 0, 0)).toEqual({ bytes: small.length });
      slow.on('error', () => undefined);
      slow.cancel();
      // the cancelled call's slot comes back (bounded wait: the cancellation reaches the seeder asynchronously)
      let again = await read(sha(data), 1024, 1024);
      for (let i = 0; i < 50 && !('bytes' in again); i++) {
        await new Promise((r) => setTimeout(r, 50));
        again = await read(sha(data), 1024, 1024);
      }
      expect(again).toEqual({ bytes: 1024 });
    } finally {
      client.close();
      await limited.close();
    }
  });
});

describe('shard transfer, a slot held until the piece is taken', () => {
  it('transfer - with the piece window, a seeder keeps the slot while the asker has not taken the piece, and frees it once it has', async () => {
    const piece = 2 * 1024 * 1024; // two chunks: gRPC would take both into its buffers at once
    const data = Buffer.alloc(piece, 5);
    await writeFile(join(tmp, 'held-blob'), data);
    const limited = new Seeder(silentLogger(), 1);
    limited.register(sha(data), join(tmp, 'held-blob'));
    const address = await limited.start('127.0.0.1');
    // a proxy whose seeder-to-asker direction can be shut: bytes the asker never sees are never
    // acknowledged in its window, as on a slow link
    let shut = false;
    const held: Buffer[] = [];
    let toAsker: Socket | undefined;
    const proxy = createServer((asker) => {
      const up = connect(Number(address.split(':')[1]), '127.0.0.1');
      toAsker = asker;
      asker.pipe(up);
      up.on('data', (d: Buffer) => (shut ? held.push(d) : asker.write(d)));
      asker.on('error', () => undefined);
      up.on('error', () => undefined);
      asker.on('close', () => up.destroy());
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    type Fetcher = grpc.Client & { fetch(req: unknown): grpc.ClientReadableStream<{ data: Buffer }> };
    const viaProxy = new ShardServiceClient(
      `127.0.0.1:${(proxy.address() as AddressInfo).port}`,
      grpc.credentials.createInsecure(),
      pieceClientOptions(piece),
    ) as unknown as Fetcher;
    const direct = new ShardServiceClient(address, grpc.credentials.createInsecure()) as unknown as Fetcher;
    const read = (client: Fetcher, length: number) =>
      new Promise<{ bytes: number } | { code: number; details: string }>((resolve) => {
        let bytes = 0;
        const c = client.fetch({ sha256: sha(data), offset: 0, length });
        c.on('data', (m: { data: Buffer }) => {
          bytes += m.data.length;
        });
        c.on('error', (e: grpc.ServiceError) => resolve({ code: e.code, details: e.details }));
        c.on('end', () => resolve({ bytes }));
      });
    try {
      // the connection (and the asker's window) is set up before the link is shut
      expect(await read(viaProxy, 1024)).toEqual({ bytes: 1024 });
      shut = true;
      const slow = read(viaProxy, piece);
      // the seeder has read and handed over the whole piece (it counts it just before ending the call)
      const key = `${sha(data)}:0:${piece}`;
      while (!limited.served().ranges.has(key)) await new Promise((r) => setImmediate(r));
      // ...but the asker has not taken it: the one slot is still held
      expect(await read(direct, 1024)).toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED, details: expect.stringMatching(/^busy/) });
      shut = false;
      for (const d of held.splice(0)) toAsker!.write(d);
      expect(await slow).toEqual({ bytes: piece });
      // the asker has the piece: the slot is free (bounded wait: the end reaches the seeder asynchronously)
      let again = await read(direct, 1024);
      for (let i = 0; i < 50 && !('bytes' in again); i++) {
        await new Promise((r) => setTimeout(r, 50));
        again = await read(direct, 1024);
      }
      expect(again).toEqual({ bytes: 1024 });
    } finally {
      viaProxy.close();
      direct.close();
      proxy.close();
      await limited.close();
    }
  });
});

describe('shard transfer, one slot per asker while others wait', () => {
  it('transfer - an asker holding a slot gets no second one while another was turned away, but a new asker does', async () => {
    const data = Buffer.alloc(32 * 1024 * 1024, 9);
    await writeFile(join(tmp, 'fair-blob'), data);
    // the window to turn away extra requests is long here: no test depends on how fast it runs
    const limited = new Seeder(silentLogger(), 2, 60_000);
    limited.register(sha(data), join(tmp, 'fair-blob'));
    const address = await limited.start('127.0.0.1');
    type Fetcher = grpc.Client & { fetch(req: unknown): grpc.ClientReadableStream<{ data: Buffer }> };
    // each asker its own connection (clients with the same options would otherwise share one)
    const asker = () =>
      new ShardServiceClient(address, grpc.credentials.createInsecure(), {
        'grpc.use_local_subchannel_pool': 1,
      }) as unknown as Fetcher;
    const [a, b, c] = [asker(), asker(), asker()];
    const read = (client: Fetcher) =>
      new Promise<{ bytes: number } | { code: number; details: string }>((resolve) => {
        let bytes = 0;
        const call = client.fetch({ sha256: sha(data), offset: 0, length: 1024 });
        call.on('data', (m: { data: Buffer }) => {
          bytes += m.data.length;
        });
        call.on('error', (e: grpc.ServiceError) => resolve({ code: e.code, details: e.details }));
        call.on('end', () => resolve({ bytes }));
      });
    /** a whole 32 MiB range not read: the call keeps its slot (gRPC's default window) */
    const hold = async (client: Fetcher) => {
      const call = client.fetch({ sha256: sha(data), offset: 0, length: data.length });
      call.pause();
      call.on('error', () => undefined);
      await new Promise<void>((resolve) => call.once('metadata', () => resolve()));
      return call;
    };
    try {
      // a alone may take both slots
      await hold(a);
      const second = await hold(a);
      // b is turned away: every slot is taken
      expect(await read(b)).toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED, details: expect.stringMatching(/^busy: 2 uploads/) });
      second.cancel();
      // b comes back once the slot is free (bounded wait: the cancellation reaches the seeder asynchronously)
      let again = await read(b);
      for (let i = 0; i < 50 && !('bytes' in again); i++) {
        await new Promise((r) => setTimeout(r, 50));
        again = await read(b);
      }
      expect(again).toEqual({ bytes: 1024 });
      // a slot is free, but a holds one while b was turned away: a waits, c (holding none) does not
      expect(await read(a)).toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED, details: expect.stringMatching(/one upload per asker/) });
      expect(await read(c)).toEqual({ bytes: 1024 });
    } finally {
      for (const client of [a, b, c]) client.close();
      await limited.close();
    }
  });
});
