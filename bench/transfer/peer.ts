/**
 * One host of the distribution benchmark (bench/transfer/distribution.ts), run inside its own
 * network namespace: `seed` serves the blob; `fetch` waits for the go message on NATS, fetches
 * the blob (from peers too with --p2p), reports the time on NATS, then serves until told to stop.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { parseArgs } from 'node:util';
import { connect } from 'nats';
import { PEER_UPLOAD_SLOTS, SEEDER_UPLOAD_SLOTS } from '../../shared/defaults.js';
import { silentLogger } from '../../shared/logging.js';
import type { PieceList } from '../../shared/pieces.js';
import { Seeder } from '../../shared/seeder.js';
import { BlobCache } from '../../worker/shards/fetch.js';
import { NatsHolders } from '../../worker/shards/holders.js';

const { values } = parseArgs({
  options: {
    role: { type: 'string' },
    spec: { type: 'string' },
    host: { type: 'string' },
    nats: { type: 'string' },
    seeder: { type: 'string', default: '' },
    cache: { type: 'string', default: '' },
    id: { type: 'string', default: '' },
    p2p: { type: 'boolean', default: false },
  },
});
const cpuSeconds = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
/** this namespace's TCP timeouts and retransmitted segments since it started (per netns) */
async function tcpCounters(): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const file of ['/proc/net/netstat', '/proc/net/snmp']) {
    const lines = (await readFile(file, 'utf8')).split('\n');
    for (let i = 0; i + 1 < lines.length; i += 2) {
      const names = lines[i]!.split(/\s+/);
      const vals = lines[i + 1]!.split(/\s+/);
      names.forEach((n, j) => {
        if (['TCPTimeouts', 'RetransSegs', 'TCPLossProbes', 'TCPSpuriousRTOs'].includes(n)) out[n] = Number(vals[j]);
      });
    }
  }
  return out;
}
const spec = JSON.parse(await readFile(values.spec!, 'utf8')) as { path: string; sha256: string; bytes: number; pieces: PieceList };
const nc = await connect({ servers: values.nats! });
const log = silentLogger();
const seeder = new Seeder(log, values.role === 'seed' ? SEEDER_UPLOAD_SLOTS : PEER_UPLOAD_SLOTS);
const address = await seeder.start(values.host!, values.role === 'seed' ? 7000 : 0);
if (values.role === 'seed') seeder.register(spec.sha256, spec.path);
if (values.role === 'fetch') await mkdir(values.cache!, { recursive: true });
const cache = new BlobCache(values.cache || '/nonexistent');
let holders: NatsHolders | undefined;
if (values.role === 'fetch' && values.p2p) {
  holders = await NatsHolders.open(nc.jetstream(), Buffer.from(values.id!).toString('hex'), address, log);
  cache.share(seeder, holders);
}
const stop = nc.subscribe('bench.transfer.stop', { max: 1 });
const go = nc.subscribe('bench.transfer.go', { max: 1 });
nc.publish('bench.transfer.ready', values.id || 'seed');
let cpuAtGo = 0;
const stopHooks: (() => Promise<void>)[] = [];
for await (const _ of go) {
  cpuAtGo = cpuSeconds();
  if (process.env.BENCH_DEBUG) {
    // a timeline per host on stderr: what it has sent (handed to gRPC, ahead of the wire by its
    // buffers) and received, and busy answers either way
    const t0 = Date.now();
    const mib = (b: number) => (b / 2 ** 20).toFixed(1);
    setInterval(() => {
      const s = seeder.served();
      const got = cache.stats.fromPeers + cache.stats.fromSeeders;
      process.stderr.write(
        `${values.id || 'seed'} t=${Math.round((Date.now() - t0) / 1000)} s: sent ${mib(s.bytes)} MiB, received ${mib(got)} MiB, busy answers given ${s.busy}, got ${cache.stats.busy}\n`,
      );
    }, 5000).unref();
  }
  if (process.env.BENCH_TRACE) {
    // every 250 ms, one JSON file per host in BENCH_TRACE at the end: [ms since go, link bytes
    // sent, received (the kernel's count, this namespace's sysfs), uploads in progress, pieces
    // fetched, busy answers given, got]: where a host's upload goes idle
    const dev = `obp-${values.id || 'seed'}`;
    const counter = (d: string) => readFile(`/sys/class/net/${dev}/statistics/${d}_bytes`, 'utf8').then(Number, () => -1);
    const t0 = Date.now();
    const trace: number[][] = [];
    const sample = async () => {
      const s = seeder.served();
      trace.push([Date.now() - t0, await counter('tx'), await counter('rx'), seeder.uploads, cache.stats.pieces, s.busy, cache.stats.busy]);
    };
    const timer = setInterval(() => void sample(), 250);
    timer.unref();
    const name = values.role === 'seed' ? `seed-${process.pid}` : basename(values.cache!);
    stopHooks.push(async () => {
      clearInterval(timer);
      await writeFile(join(process.env.BENCH_TRACE!, `${name}.json`), JSON.stringify(trace));
    });
  }
  if (values.role !== 'fetch') break;
  const t0 = performance.now();
  await cache.ensure(spec.sha256, spec.bytes, [values.seeder!], spec.pieces);
  nc.publish(
    'bench.transfer.done',
    JSON.stringify({
      id: values.id,
      s: (performance.now() - t0) / 1000,
      fromPeers: cache.stats.fromPeers,
      fromSeeders: cache.stats.fromSeeders,
    }),
  );
}
for await (const _ of stop) break;
for (const h of stopHooks) await h();
// what each host sent (the seeder more than the blob: pieces sent twice) and its CPU since go
nc.publish(
  'bench.transfer.stats',
  JSON.stringify({
    id: values.id || 'seed',
    served: seeder.served().bytes,
    cpuS: cpuSeconds() - cpuAtGo,
    busyServed: seeder.served().busy,
    tcp: process.env.BENCH_DEBUG ? await tcpCounters() : undefined,
    pieces: cache.stats,
  }),
);
await nc.flush();
await holders?.leave();
cache.close();
await seeder.close();
await nc.close();
