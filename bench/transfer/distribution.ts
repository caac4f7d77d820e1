/**
 * Pool distribution time to N = 1, 2, 4, 8, 16 workers, peer-to-peer against coordinator-only,
 * on capped links. Every host (the coordinator with its seeder and nats-server, and each worker)
 * is a network namespace joined to one bridge by a veth pair whose two ends are capped with
 * `tc qdisc tbf` (upload and download), so a star and a mesh differ as on real NICs. Workers are
 * plain BlobCache fetchers (bench/transfer/peer.ts), no evaluation. Needs root and iproute2.
 * Usage: npm run bench:transfer -- distribution [--mb 64] [--mbit 200] [--piece-mb 1] [--workers 1,2,4,8,16]
 */
import { type ChildProcessWithoutNullStreams, execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { table } from '../../cli/output.js';
import { PieceHasher } from '../../shared/index.js';

const { values } = parseArgs({
  args: process.argv.slice(2).filter((a) => a !== 'distribution'),
  options: {
    mb: { type: 'string', default: '64' },
    mbit: { type: 'string', default: '200' },
    'piece-mb': { type: 'string', default: '1' },
    workers: { type: 'string', default: '1,2,4,8,16' },
    modes: { type: 'string', default: 'peers,star' },
  },
});
const BYTES = Number(values.mb) * 2 ** 20;
const PIECE_BYTES = Math.round(Number(values['piece-mb']) * 2 ** 20);
const COUNTS = values.workers.split(',').map(Number);
const MAX_N = Math.max(...COUNTS);
const MODES = values.modes.split(',') as ('peers' | 'star')[];
const PEER_JS = join(dirname(fileURLToPath(import.meta.url)), 'peer.js');
/** A round that takes longer than this (star at N=16 on a slow cap is the worst) is a failure. */
const ROUND_LIMIT_MS = 600_000;

const PREFIX = 'optb';
const BRIDGE = `${PREFIX}-br`;
const COORD_IP = '10.77.0.1';
const hostNs = (i: number) => `${PREFIX}-h${i}`; // 0: the coordinator
const hostIp = (i: number) => (i === 0 ? COORD_IP : `10.77.0.${10 + i}`);

const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
const inNs = (ns: string, cmd: string, args: string[]) => sh('ip', ['netns', 'exec', ns, cmd, ...args]);
/** tbf with a burst of a few ms of traffic: enough for GSO segments, small enough to hold the rate. */
const cap = (mbit: number) => ['root', 'tbf', 'rate', `${mbit}mbit`, 'burst', `${Math.max(64, mbit / 8) | 0}kb`, 'latency', '50ms'];

function teardown(): void {
  for (let i = 0; i <= MAX_N; i++) {
    try {
      sh('ip', ['netns', 'del', hostNs(i)]);
    } catch {}
  }
  try {
    sh('ip', ['link', 'del', BRIDGE]);
  } catch {}
}

function setup(mbit: number): void {
  teardown();
  sh('ip', ['link', 'add', BRIDGE, 'type', 'bridge']);
  sh('ip', ['link', 'set', BRIDGE, 'up']);
  for (let i = 0; i <= MAX_N; i++) {
    const ns = hostNs(i);
    const outside = `${PREFIX}-v${i}`;
    sh('ip', ['netns', 'add', ns]);
    sh('ip', ['link', 'add', outside, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    sh('ip', ['link', 'set', outside, 'master', BRIDGE, 'up']);
    inNs(ns, 'ip', ['link', 'set', 'lo', 'up']);
    inNs(ns, 'ip', ['addr', 'add', `${hostIp(i)}/24`, 'dev', 'eth0']);
    inNs(ns, 'ip', ['link', 'set', 'eth0', 'up']);
    inNs(ns, 'tc', ['qdisc', 'add', 'dev', 'eth0', ...cap(mbit)]); // the host's upload
    sh('tc', ['qdisc', 'add', 'dev', outside, ...cap(mbit)]); // its download
  }
}

interface Child {
  proc: ChildProcessWithoutNullStreams;
  line(timeoutMs: number): Promise<string>;
}

function start(ns: string, cmd: string, args: string[]): Child {
  const proc = spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  const it = createInterface({ input: proc.stdout })[Symbol.asyncIterator]();
  let err = '';
  proc.stderr.on('data', (d: Buffer) => {
    err = (err + d.toString()).slice(-2000);
  });
  return {
    proc,
    line: async (timeoutMs) => {
      let timer: NodeJS.Timeout | undefined;
      const r = await Promise.race([
        it.next(),
        new Promise<never>((_, rej) => {
          timer = setTimeout(() => rej(new Error(`${ns}: no answer in ${timeoutMs} ms\n${err}`)), timeoutMs);
        }),
      ]).finally(() => clearTimeout(timer));
      if (r.done) throw new Error(`${ns}: exited\n${err}`);
      return r.value as string;
    },
  };
}

async function stop(c: Child): Promise<void> {
  if (c.proc.exitCode !== null) return;
  c.proc.stdin.end('stop\n');
  const exited = new Promise((r) => c.proc.once('exit', r));
  const timer = setTimeout(() => c.proc.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

async function main(): Promise<void> {
  const mbit = Number(values.mbit);
  const dir = await mkdtemp(join(tmpdir(), 'optimer-bench-dist-'));
  const children: Child[] = [];
  const onSignal = () => {
    for (const c of children) c.proc.kill('SIGKILL');
    teardown();
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const blob = randomBytes(BYTES);
    const sha = createHash('sha256').update(blob).digest('hex');
    const blobPath = join(dir, sha);
    await writeFile(blobPath, blob);
    const hasher = new PieceHasher(PIECE_BYTES);
    hasher.update(blob);
    const piecesPath = join(dir, 'pieces.json');
    await writeFile(piecesPath, JSON.stringify({ pieceBytes: PIECE_BYTES, pieces: hasher.finish() }));

    setup(mbit);
    const coord = hostNs(0);
    const nats = start(coord, 'nats-server', ['-js', '-a', COORD_IP, '-p', '4222', '-sd', join(dir, 'nats')]);
    children.push(nats);
    const seed = start(coord, process.execPath, [PEER_JS, 'seed', '--host', COORD_IP, '--blob', blobPath, '--sha', sha]);
    children.push(seed);
    const seederAddress = await seed.line(30_000);
    // nats-server logs to stderr; wait until it accepts connections (a bounded poll)
    for (let i = 0; ; i++) {
      try {
        inNs(coord, 'bash', ['-c', `exec 3<>/dev/tcp/${COORD_IP}/4222`]);
        break;
      } catch (e) {
        if (i >= 100) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }

    const results = new Map<string, { seconds: number; servedMiB: number; cpuSeconds: number }>();
    let servedBefore = 0;
    for (const mode of MODES)
      for (const n of COUNTS) {
        const round: Child[] = [];
        for (let i = 1; i <= n; i++) {
          const cache = join(dir, `cache-${mode}-${n}-${i}`);
          await mkdir(cache, { recursive: true });
          const args = [PEER_JS, 'fetch', '--host', hostIp(i), '--nats', `nats://${COORD_IP}:4222`, '--seeder', seederAddress];
          args.push('--sha', sha, '--bytes', String(BYTES), '--pieces', piecesPath, '--cache', cache);
          if (mode === 'star') args.push('--star');
          const c = start(hostNs(i), process.execPath, args);
          round.push(c);
          children.push(c);
        }
        for (const c of round) if ((await c.line(60_000)) !== 'ready') throw new Error('a fetcher did not start');
        const t0 = performance.now();
        for (const c of round) c.proc.stdin.write('go\n');
        const done = await Promise.all(
          round.map((c) => c.line(ROUND_LIMIT_MS).then((l) => JSON.parse(l) as { seconds: number; cpuSeconds: number })),
        );
        const seconds = (performance.now() - t0) / 1000;
        seed.proc.stdin.write('served\n');
        const served = (JSON.parse(await seed.line(10_000)) as { bytes: number }).bytes;
        const cpuSeconds = done.reduce((t, d) => t + d.cpuSeconds, 0);
        results.set(`${mode}:${n}`, { seconds, servedMiB: (served - servedBefore) / 2 ** 20, cpuSeconds });
        servedBefore = served;
        await Promise.all(round.map(stop));
        for (const c of round) children.splice(children.indexOf(c), 1);
        await Promise.all(
          Array.from({ length: n }, (_, i) => rm(join(dir, `cache-${mode}-${n}-${i + 1}`), { recursive: true, force: true })),
        );
        const slowest = Math.max(...done.map((d) => d.seconds));
        console.error(
          `${mode} N=${n}: ${seconds.toFixed(2)} s (slowest fetcher ${slowest.toFixed(2)} s, fetchers' CPU ${cpuSeconds.toFixed(1)} s)`,
        );
      }

    const rows: (string | number)[][] = [
      ['N', ...MODES.flatMap((m) => [`${m} s`, `${m} ×N=1`, `${m} coordinator MiB`, `${m} fetchers' CPU s`])],
    ];
    for (const n of COUNTS)
      rows.push([
        n,
        ...MODES.flatMap((m) => {
          const r = results.get(`${m}:${n}`)!;
          const one = results.get(`${m}:${COUNTS[0]}`)!;
          return [r.seconds.toFixed(2), (r.seconds / one.seconds).toFixed(2), r.servedMiB.toFixed(0), r.cpuSeconds.toFixed(1)];
        }),
      ]);
    console.log(
      `${BYTES / 2 ** 20} MiB blob in ${PIECE_BYTES / 2 ** 20} MiB pieces; every host's link capped at ${mbit} Mbit/s each way (netns + veth + tc tbf)`,
    );
    console.log(table(rows));
    await stop(seed);
    nats.proc.kill('SIGTERM');
  } finally {
    for (const c of children) c.proc.kill('SIGKILL');
    teardown();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
