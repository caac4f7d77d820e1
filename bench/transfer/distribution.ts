/**
 * Pool distribution time to N workers, peer-to-peer against coordinator-only, on capped links.
 * Each host (the seeder, each worker) is a network namespace joined to a bridge by a veth pair,
 * its link capped both ways with `tc qdisc tbf`, as real NICs would be; NATS runs on the bridge
 * (uncapped: control traffic). Needs root and iproute2. Usage:
 * npm run bench:transfer:distribution -- [--mb 64] [--mbit 200] [--piece-mb 1] [--workers 1,2,4,8,16]
 */
import { spawn, execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { connect } from 'nats';
import { table } from '../../cli/output.js';
import { startNatsServer } from '../../shared/nats-server.js';
import { writeBlob } from './blob.js';

const { values } = parseArgs({
  options: {
    mb: { type: 'string', default: '64' },
    mbit: { type: 'string', default: '200' },
    'piece-mb': { type: 'string', default: '1' },
    /** a run not done by then is reported as such and the next one started */
    'limit-s': { type: 'string', default: '90' },
    workers: { type: 'string', default: '1,2,4,8,16' },
    /** coordinator-only runs only up to this many workers (it grows linearly: slow links make it long) */
    'star-max': { type: 'string', default: '16' },
  },
});
const CORES = availableParallelism();
/**
 * Each link's queue, KiB: 50 ms of its rate, but at least 256 KiB. A queue of a few packets (50 ms
 * of a slow link) shared by a dozen TCP flows starves some of them in retransmission timeouts for
 * seconds: that measures TCP under a pathological buffer, not piece distribution.
 */
const QUEUE_KB = Math.max(256, Math.ceil((Number(values.mbit) * 1e6 * 0.05) / 8 / 1024));
const pct = (x: number) => `${Math.round(100 * x)}%`;
const counts = values.workers.split(',').map(Number);
const MAX = Math.max(...counts);
const BRIDGE = 'obr0';
const NET = '10.77.0';
const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
const tc = (...args: string[]) => execFileSync('tc', args, { stdio: ['ignore', 'ignore', 'pipe'] });
const hosts = ['seed', ...Array.from({ length: MAX }, (_, i) => `w${i + 1}`)];
const addr = (i: number) => `${NET}.${10 + i}`;

function teardown(): void {
  for (const h of hosts) {
    try {
      ip('netns', 'del', `ob-${h}`);
    } catch {}
  }
  try {
    ip('link', 'del', BRIDGE);
  } catch {}
}

function setup(): void {
  teardown();
  ip('link', 'add', BRIDGE, 'type', 'bridge');
  ip('addr', 'add', `${NET}.1/24`, 'dev', BRIDGE);
  ip('link', 'set', BRIDGE, 'up');
  const cap = `${values.mbit}mbit`;
  hosts.forEach((h, i) => {
    const ns = `ob-${h}`;
    ip('netns', 'add', ns);
    ip('link', 'add', `obv-${h}`, 'type', 'veth', 'peer', 'name', `obp-${h}`);
    ip('link', 'set', `obp-${h}`, 'netns', ns);
    ip('link', 'set', `obv-${h}`, 'master', BRIDGE);
    ip('link', 'set', `obv-${h}`, 'up');
    ip('-n', ns, 'addr', 'add', `${addr(i)}/24`, 'dev', `obp-${h}`);
    ip('-n', ns, 'link', 'set', `obp-${h}`, 'up');
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    // upload (inside the host) and download (the bridge's side) both capped
    const queue = ['limit', `${QUEUE_KB}kb`];
    tc('-n', ns, 'qdisc', 'add', 'dev', `obp-${h}`, 'root', 'tbf', 'rate', cap, 'burst', '256kb', ...queue);
    tc('qdisc', 'add', 'dev', `obv-${h}`, 'root', 'tbf', 'rate', cap, 'burst', '256kb', ...queue);
  });
}

const dir = await mkdtemp(join(tmpdir(), 'optimer-bench-dist-'));
const here = new URL('.', import.meta.url).pathname;
const children: ReturnType<typeof spawn>[] = [];
setup();
process.once('SIGINT', () => {
  for (const c of children) c.kill('SIGKILL');
  teardown();
  process.exit(130);
});
try {
  const blobPath = join(dir, 'blob');
  const blob = await writeBlob(blobPath, Number(values.mb), Math.round(Number(values['piece-mb']) * (1 << 20)));
  const specPath = join(dir, 'spec.json');
  await writeFile(specPath, JSON.stringify({ path: blobPath, ...blob }));
  /** one run: seconds (a string when it did not finish), share from peers, seeder bytes ÷ blob, CPU s of all hosts */
  interface Run {
    seconds: string;
    fromPeers: number;
    seedServed: number;
    cpuS: number;
  }
  const rows: { n: number; star: Run; mesh: Run }[] = [];
  for (const n of counts) {
    const runs: Run[] = [];
    for (const p2p of [false, true]) {
      if (!p2p && n > Number(values['star-max'])) {
        runs.push({ seconds: '-', fromPeers: 0, seedServed: 0, cpuS: 0 });
        continue;
      }
      const nats = await startNatsServer({ storeDir: join(dir, `nats-${n}-${p2p}`), host: `${NET}.1` });
      const nc = await connect({ servers: nats.url });
      const ready = nc.subscribe('bench.transfer.ready', { max: n + 1 });
      const done = nc.subscribe('bench.transfer.done', { max: n });
      const natsUrl = nats.url;
      const start = (h: string, i: number, args: string[]) => {
        const c = spawn(
          'ip',
          [
            'netns',
            'exec',
            `ob-${h}`,
            process.execPath,
            join(here, 'peer.js'),
            '--spec',
            specPath,
            '--host',
            addr(i),
            '--nats',
            natsUrl,
            ...args,
          ],
          {
            stdio: ['ignore', 'ignore', 'inherit'],
          },
        );
        children.push(c);
        return c;
      };
      start('seed', 0, ['--role', 'seed']);
      for (let i = 1; i <= n; i++)
        start(`w${i}`, i, [
          '--role',
          'fetch',
          '--id',
          `w${i}`,
          '--cache',
          join(dir, `cache-${n}-${p2p}-${i}`),
          '--seeder',
          `${addr(0)}:7000`,
          ...(p2p ? ['--p2p'] : []),
        ]);
      let got = 0;
      for await (const _ of ready) if (++got === n + 1) break;
      const t0 = performance.now();
      nc.publish('bench.transfer.go', '');
      const times: number[] = [];
      let fromPeers = 0;
      const limit = setTimeout(() => done.unsubscribe(), Number(values['limit-s']) * 1000);
      for await (const m of done) {
        const r = JSON.parse(m.string()) as { s: number; fromPeers: number };
        times.push(r.s);
        fromPeers += r.fromPeers;
        if (times.length === n) break;
      }
      clearTimeout(limit);
      const all = (performance.now() - t0) / 1000;
      const stats = nc.subscribe('bench.transfer.stats', { max: n + 1 });
      nc.publish('bench.transfer.stop', '');
      await nc.flush();
      let seedServed = 0;
      let cpu = 0;
      let heard = 0;
      const statsLimit = setTimeout(() => stats.unsubscribe(), 10_000);
      for await (const m of stats) {
        const r = JSON.parse(m.string()) as { id: string; served: number; cpuS: number };
        if (process.env.BENCH_DEBUG) process.stderr.write(`${m.string()}\n`);
        if (r.id === 'seed') seedServed = r.served;
        cpu += r.cpuS;
        if (++heard === n + 1) break;
      }
      clearTimeout(statsLimit);
      runs.push({
        seconds: times.length === n ? all.toFixed(1) : `> ${values['limit-s']} (${times.length}/${n} done)`,
        fromPeers: fromPeers / (n * blob.bytes),
        seedServed: seedServed / blob.bytes,
        cpuS: cpu,
      });
      await Promise.all(children.splice(0).map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once('exit', r)))));
      await nc.close();
      await nats.stop();
      await rm(join(dir, `nats-${n}-${p2p}`), { recursive: true, force: true });
      for (let i = 1; i <= n; i++) await rm(join(dir, `cache-${n}-${p2p}-${i}`), { recursive: true, force: true });
    }
    const [star, mesh] = runs as [Run, Run];
    rows.push({ n, star, mesh });
    process.stderr.write(`N=${n}: coordinator only ${star.seconds} s, peer-to-peer ${mesh.seconds} s, from peers ${pct(mesh.fromPeers)}\n`);
  }
  const base = rows[0]!;
  const vsBase = (r: Run, b: Run) => (r.seconds === '-' ? '-' : `${(Number(r.seconds) / Number(b.seconds)).toFixed(2)}×`);
  // CPU as a share of what the machine's cores could give in that time: near 100% is CPU-bound
  const cpuText = (r: Run) => (r.seconds === '-' ? '-' : `${r.cpuS.toFixed(1)} (${pct(r.cpuS / (CORES * Number(r.seconds)))})`);
  process.stdout.write(
    `${values.mb} MiB blob in ${values['piece-mb']} MiB pieces, every link capped at ${values.mbit} Mbit/s each way (tc tbf, veth + netns), ${CORES} cores; seconds from go to the last worker holding it verified; seeder sent = bytes the seeder sent ÷ the blob; CPU = seconds of CPU of all hosts from go, and its share of the cores:\n${table(
      [
        [
          'workers',
          'coordinator only (s)',
          'peer-to-peer (s)',
          'bytes from peers',
          'coordinator only vs N=1',
          'peer-to-peer vs N=1',
          'seeder sent, peer-to-peer',
          'CPU s, coordinator only',
          'CPU s, peer-to-peer',
        ],
        ...rows.map((r) => [
          r.n,
          r.star.seconds,
          r.mesh.seconds,
          pct(r.mesh.fromPeers),
          vsBase(r.star, base.star),
          vsBase(r.mesh, base.mesh),
          `${r.mesh.seedServed.toFixed(2)}×`,
          cpuText(r.star),
          cpuText(r.mesh),
        ]),
      ],
    )}\n`,
  );
} finally {
  for (const c of children) c.kill('SIGKILL');
  teardown();
  await rm(dir, { recursive: true, force: true });
}
