/**
 * One host of the distribution benchmark (bench/transfer/distribution.ts starts it inside a
 * network namespace). Roles:
 *   seed  --host IP --blob PATH --sha SHA        the coordinator's seeder; prints its address
 *   fetch --host IP --nats URL --seeder ADDR --sha SHA --bytes N --pieces FILE --cache DIR [--star]
 *         a plain BlobCache fetcher; without --star it serves and announces what it holds, as a
 *         worker does. It prints `ready`, fetches on a `go` line and prints its time as JSON.
 * Both stop on a `stop` line (or when stdin closes), the seeder printing what it served.
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { connect } from 'nats';
import { Seeder, silentLogger, type PieceList } from '../../shared/index.js';
import { BlobCache } from '../../worker/index.js';
import { NatsHolders } from '../../worker/shards/holders.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    host: { type: 'string' },
    blob: { type: 'string' },
    sha: { type: 'string' },
    bytes: { type: 'string' },
    pieces: { type: 'string' },
    cache: { type: 'string' },
    nats: { type: 'string' },
    seeder: { type: 'string' },
    star: { type: 'boolean', default: false },
  },
});
const log = silentLogger();
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const nextLine = async () => (await lines.next()).value as string | undefined;
const say = (x: unknown) => process.stdout.write(`${typeof x === 'string' ? x : JSON.stringify(x)}\n`);

async function seed(): Promise<void> {
  const seeder = new Seeder(log);
  seeder.register(values.sha!, values.blob!);
  say(await seeder.start(values.host!, 0));
  for (let l = await nextLine(); l !== undefined && l !== 'stop'; l = await nextLine())
    if (l === 'served') {
      const s = seeder.served();
      say({ bytes: s.bytes, requests: s.requests });
    }
  await seeder.close();
}

async function fetch(): Promise<void> {
  const pieces = JSON.parse(await readFile(values.pieces!, 'utf8')) as PieceList;
  const nc = await connect({ servers: values.nats!, name: 'bench-peer' });
  const cache = new BlobCache(values.cache!);
  let seeder: Seeder | undefined;
  let holders: NatsHolders | undefined;
  if (!values.star) {
    seeder = new Seeder(log);
    const address = await seeder.start(values.host!, 0);
    holders = await NatsHolders.open(nc.jetstream(), randomBytes(8).toString('hex'), address, log);
    cache.share(seeder, holders);
  }
  say('ready');
  if ((await nextLine()) === 'go') {
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    await cache.ensure(values.sha!, Number(values.bytes), [values.seeder!], pieces);
    const cpu = process.cpuUsage(cpu0);
    say({
      seconds: (performance.now() - t0) / 1000,
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
      fromPeers: cache.stats.fromPeers,
      fromSeeders: cache.stats.fromSeeders,
    });
    // keep serving until the benchmark's round is over
    for (let l = await nextLine(); l !== undefined && l !== 'stop'; l = await nextLine());
  }
  await holders?.leave();
  await seeder?.close();
  cache.close();
  await nc.close();
}

await (positionals[0] === 'seed' ? seed() : fetch());
process.exit(0);
