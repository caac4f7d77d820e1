/**
 * Shard transfer over gRPC on one loopback link against raw TCP moving the same bytes in the same
 * run (each receiver writes the bytes to a file, as the cache does). Usage:
 * npm run bench:transfer -- [--mb 256] [--repeat 3]
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pipeline } from 'node:stream/promises';
import { table } from '../../cli/output.js';
import { silentLogger } from '../../shared/logging.js';
import { Seeder } from '../../shared/seeder.js';
import { BlobCache } from '../../worker/shards/fetch.js';
import { writeBlob } from './blob.js';

const { values } = parseArgs({ options: { mb: { type: 'string', default: '256' }, repeat: { type: 'string', default: '3' } } });
const MB = Number(values.mb);
const REPEAT = Number(values.repeat);

const dir = await mkdtemp(join(tmpdir(), 'optimer-bench-transfer-'));
try {
  const src = join(dir, 'blob');
  const blob = await writeBlob(src, MB, 4 << 20);

  // raw TCP: a server that streams the file, a client that writes what it gets to a file
  const tcp = createServer((sock) => void pipeline(createReadStream(src, { highWaterMark: 1 << 20 }), sock).catch(() => undefined));
  await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
  const tcpPort = (tcp.address() as { port: number }).port;
  const rawTcp = async (): Promise<void> => {
    const sock = connect(tcpPort, '127.0.0.1');
    await pipeline(sock, createWriteStream(join(dir, 'tcp-out')));
  };

  const seeder = new Seeder(silentLogger());
  seeder.register(blob.sha256, src);
  const address = await seeder.start('127.0.0.1');
  let run = 0;
  const grpcFetch = (pieces: boolean) => async (): Promise<void> => {
    const cacheDir = join(dir, `cache-${run++}`);
    await mkdir(cacheDir);
    const cache = new BlobCache(cacheDir);
    await cache.ensure(blob.sha256, blob.bytes, [address], pieces ? blob.pieces : undefined);
    cache.close();
    await rm(cacheDir, { recursive: true, force: true });
  };

  const cases: [string, () => Promise<void>][] = [
    ['raw TCP (node:net → file)', rawTcp],
    ['gRPC, one stream, 1 MiB chunks, whole blob + sha256', grpcFetch(false)],
    ['gRPC, 4 streams of 4 MiB pieces, each hashed as it arrives', grpcFetch(true)],
  ];
  const best = new Map<string, number>();
  for (let r = 0; r < REPEAT; r++)
    for (const [name, f] of cases) {
      const t0 = performance.now();
      await f();
      const s = (performance.now() - t0) / 1000;
      best.set(name, Math.min(best.get(name) ?? Number.POSITIVE_INFINITY, s));
    }
  const tcpRate = blob.bytes / best.get(cases[0]![0])! / (1 << 30);
  process.stdout.write(
    `${MB} MiB over loopback, best of ${REPEAT}, same run:\n${table([
      ['path', 'GiB/s', 'vs raw TCP'],
      ...cases.map(([name]) => {
        const rate = blob.bytes / best.get(name)! / (1 << 30);
        return [name, rate.toFixed(2), `${Math.round((100 * rate) / tcpRate)}%`];
      }),
    ])}\n`,
  );
  await seeder.close();
  tcp.close();
} finally {
  await rm(dir, { recursive: true, force: true });
}
