/**
 * Shard transfer over gRPC on one uncapped loopback link, against raw TCP moving the same bytes
 * in the same run. Rows: the production path (Seeder → BlobCache, whole and by pieces: sha256
 * and a disk write included), raw TCP with the same hash and write, and bare streams (bytes
 * received and dropped) for grpc-js settings: chunk size, flow-control window, streams.
 * Usage: npm run bench:transfer -- link [--mb 256] [--repeat 3]
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { createServer, connect, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { table } from '../../cli/output.js';
import { CLIENT_OPTIONS, grpc, PieceHasher, Seeder, ShardServiceClient, shardServiceDefinition, silentLogger } from '../../shared/index.js';
import { BlobCache } from '../../worker/index.js';

const { values } = parseArgs({
  args: process.argv.slice(2).filter((a) => a !== 'link'),
  options: { mb: { type: 'string', default: '256' }, repeat: { type: 'string', default: '3' } },
});
const BYTES = Number(values.mb) * 2 ** 20;
const REPEAT = Number(values.repeat);
const HOST = '127.0.0.1';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Seconds of the median of REPEAT runs. */
async function timed(run: () => Promise<void>): Promise<number> {
  const s: number[] = [];
  for (let i = 0; i < REPEAT; i++) {
    const t0 = performance.now();
    await run();
    s.push((performance.now() - t0) / 1000);
  }
  return median(s);
}

/** A TCP server that writes `blob` to every connection in `chunk`-byte writes. */
async function rawServer(blob: Buffer, chunk: number): Promise<Server> {
  const server = createServer((sock) => {
    let at = 0;
    const pump = () => {
      while (at < blob.length) {
        const end = Math.min(blob.length, at + chunk);
        const ok = sock.write(blob.subarray(at, end));
        at = end;
        if (!ok) return void sock.once('drain', pump);
      }
      sock.end();
    };
    pump();
  });
  await new Promise<void>((r) => server.listen(0, HOST, r));
  return server;
}

async function rawFetch(port: number, sink: (b: Buffer) => void | Promise<void>): Promise<number> {
  const sock = connect(port, HOST);
  let got = 0;
  for await (const b of sock as AsyncIterable<Buffer>) {
    got += b.length;
    await sink(b);
  }
  if (got !== BYTES) throw new Error(`raw TCP: ${got} of ${BYTES} bytes`);
  return got;
}

/** A bare ShardService streaming `blob` from memory in `chunk`-byte messages (ranges honoured). */
async function bareServer(blob: Buffer, chunk: number): Promise<{ address: string; server: grpc.Server }> {
  const server = new grpc.Server();
  type Call = grpc.ServerWritableStream<{ offset: number; length: number }, { data: Uint8Array }>;
  server.addService(shardServiceDefinition, {
    fetch: (call: Call) => {
      const end = call.request.length ? call.request.offset + call.request.length : blob.length;
      let at = call.request.offset;
      const pump = () => {
        while (at < end) {
          const next = Math.min(end, at + chunk);
          const ok = call.write({ data: blob.subarray(at, next) });
          at = next;
          if (!ok) return void call.once('drain', pump);
        }
        call.end();
      };
      pump();
    },
  });
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync(`${HOST}:0`, grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))),
  );
  return { address: `${HOST}:${port}`, server };
}

/** Receives the blob over `streams` ranged calls at once, dropping the bytes. */
async function bareFetch(address: string, options: grpc.ClientOptions, streams: number): Promise<void> {
  const client = new ShardServiceClient(address, grpc.credentials.createInsecure(), options) as unknown as grpc.Client & {
    fetch(req: unknown): grpc.ClientReadableStream<{ data: Buffer }>;
  };
  const part = Math.ceil(BYTES / streams);
  const counts = await Promise.all(
    Array.from({ length: streams }, async (_, i) => {
      const offset = i * part;
      const call = client.fetch({ sha256: '0'.repeat(64), offset, length: Math.min(part, BYTES - offset) });
      let got = 0;
      for await (const c of call as AsyncIterable<{ data: Buffer }>) got += c.data.length;
      return got;
    }),
  );
  client.close();
  const got = counts.reduce((a, b) => a + b, 0);
  if (got !== BYTES) throw new Error(`gRPC: ${got} of ${BYTES} bytes`);
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'optimer-bench-link-'));
  try {
    const blob = randomBytes(BYTES);
    const sha256 = createHash('sha256').update(blob).digest('hex');
    const blobPath = join(dir, sha256);
    await writeFile(blobPath, blob);
    const hasher = new PieceHasher(4 * 2 ** 20);
    hasher.update(blob);
    const pieces = { pieceBytes: 4 * 2 ** 20, pieces: hasher.finish() };

    const rows: (string | number)[][] = [['transfer', 'streams', 'chunk', 'window', 'MB/s', 'of raw TCP']];
    const mbps = (s: number) => BYTES / 2 ** 20 / s;

    // raw TCP: bytes dropped, and with the same sha256 + disk write the cache does
    const raw = await rawServer(blob, 1 << 20);
    const rawPort = (raw.address() as AddressInfo).port;
    const rawBare = mbps(await timed(() => rawFetch(rawPort, () => undefined).then(() => undefined)));
    const rawFile = mbps(
      await timed(async () => {
        const fh = await open(join(dir, 'raw.out'), 'w');
        const h = createHash('sha256');
        await rawFetch(rawPort, async (b) => {
          h.update(b);
          await fh.write(b);
        });
        await fh.close();
        if (h.digest('hex') !== sha256) throw new Error('raw TCP: hash mismatch');
      }),
    );
    raw.close();
    rows.push(['raw TCP, bytes dropped', 1, '1 MiB writes', 'kernel', rawBare, 1]);
    rows.push(['raw TCP + sha256 + file write', 1, '1 MiB writes', 'kernel', rawFile, rawFile / rawBare]);

    // the production path
    const seeder = new Seeder(silentLogger());
    seeder.register(sha256, blobPath);
    const address = await seeder.start(HOST, 0);
    let run = 0;
    const viaCache = async (withPieces: boolean) => {
      const cacheDir = join(dir, `cache-${run++}`);
      const cache = new BlobCache(cacheDir);
      await mkdir(cacheDir, { recursive: true });
      await cache.ensure(sha256, BYTES, [address], withPieces ? pieces : undefined);
      cache.close();
      await rm(cacheDir, { recursive: true, force: true });
    };
    const whole = mbps(await timed(() => viaCache(false)));
    rows.push(['Seeder → BlobCache, whole (sha256 + write)', 1, '1 MiB', '64 MiB', whole, whole / rawBare]);
    const byPieces = mbps(await timed(() => viaCache(true)));
    rows.push(['Seeder → BlobCache, 4 MiB pieces (verify + write)', 4, '1 MiB', '64 MiB', byPieces, byPieces / rawBare]);
    await seeder.close();

    // bare gRPC streams: what the settings alone do
    const defaults: grpc.ClientOptions = { 'grpc.max_receive_message_length': 8 * 1024 * 1024 };
    for (const chunk of [64 << 10, 256 << 10, 1 << 20, 4 << 20]) {
      const { address: a, server } = await bareServer(blob, chunk);
      const settings: [string, grpc.ClientOptions, number][] =
        chunk === 1 << 20
          ? [
              ['default', defaults, 1],
              ['64 MiB', CLIENT_OPTIONS, 1],
              ['64 MiB', CLIENT_OPTIONS, 2],
              ['64 MiB', CLIENT_OPTIONS, 4],
            ]
          : [['64 MiB', CLIENT_OPTIONS, 1]];
      for (const [window, opts, streams] of settings) {
        const r = mbps(await timed(() => bareFetch(a, opts, streams)));
        rows.push([`bare gRPC stream, bytes dropped`, streams, `${chunk >> 10} KiB`, window, r, r / rawBare]);
      }
      server.forceShutdown();
    }
    console.log(`${BYTES / 2 ** 20} MiB over loopback, median of ${REPEAT} runs each, Node ${process.version}`);
    console.log(table(rows));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
