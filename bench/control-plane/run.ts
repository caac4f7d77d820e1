/**
 * Control-plane benchmark: how many trials per second the coordinator and the NATS queues hand
 * out, with the evaluation taken away. A real nats-server, a real coordinator (random sampler,
 * the built-in family's pool) with its LevelDB record in this process (or `--store memory`), and
 * the workers in one child process (workers.ts: in-process Worker instances with the bench-only
 * fixed-time evaluator `benchFixedEvalMs`, no merge and no ONNX Runtime), so that the
 * coordinator's event loop is its own, as on a real mesh.
 *
 * `--baseline DIST` runs every row on another build too (its dist/ directory, for example the
 * last commit built elsewhere), alternating with this one, so both are measured in the same run
 * on the same machine.
 *
 * Usage: npm run bench:control -- [--noop-trials 400 (0: no no-op row)] [--fixed-ms 100]
 *   [--per-worker 12] [--workers 1,2,4,8,16] [--store level|memory] [--baseline DIST] [--tpe]
 *   [--worker-processes 1]
 */
import { fork } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { table } from '../../cli/output.js';
import { buildFamily, buildPool, silentLogger, startNatsServer } from '../../shared/index.js';
import type { FromWorkers, ToWorkers } from './workers.js';

type CoordinatorModule = typeof import('../../coordinator/index.js');

const { values } = parseArgs({
  options: {
    'noop-trials': { type: 'string', default: '400' },
    'fixed-ms': { type: 'string', default: '100' },
    'per-worker': { type: 'string', default: '12' },
    workers: { type: 'string', default: '1,2,4,8,16' },
    store: { type: 'string', default: 'level' },
    baseline: { type: 'string' },
    tpe: { type: 'boolean', default: false },
    'worker-processes': { type: 'string', default: '1' },
  },
});
const workerProcesses = Math.max(1, Number(values['worker-processes']));

interface Build {
  label: string;
  dist: string;
  coordinator: CoordinatorModule;
}

interface RunResult {
  trialsPerSecond: number;
  medianDispatchMs: number;
  p90DispatchMs: number;
  /** CPU of the coordinator's process, of the workers' process and of nats-server, ms per trial */
  coordinatorCpuMs: number;
  workersCpuMs: number;
  natsCpuMs: number;
}

/** CPU time of a process and its children so far, ms (Linux /proc; NaN elsewhere): nats-server runs under a watchdog shell. */
async function cpuOfTree(pid: number | undefined): Promise<number> {
  if (pid === undefined) return Number.NaN;
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime, stime (fields 14, 15) in clock ticks of 10 ms
    let ms = (Number(f[11]) + Number(f[12])) * 10;
    const children = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '');
    // a child that has just exited has no stat any more: left out
    for (const c of children.split(' ').filter(Boolean)) ms += (await cpuOfTree(Number(c))) || 0;
    return ms;
  } catch {
    return Number.NaN;
  }
}

async function load(label: string, dist: string): Promise<Build> {
  const coordinator = (await import(pathToFileURL(join(dist, 'coordinator', 'index.js')).href)) as CoordinatorModule;
  return { label, dist, coordinator };
}

/** Starts the workers' process; resolves once its workers are running. */
async function startWorkers(build: Build, start: Extract<ToWorkers, { type: 'start' }>) {
  const child = fork(join(import.meta.dirname, 'workers.js'), ['--dist', build.dist], {
    execArgv: process.execArgv,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const next = () =>
    new Promise<FromWorkers>((resolve, reject) => {
      child.once('message', (m) => resolve(m as FromWorkers));
      child.once('exit', (code) => reject(new Error(`the workers' process exited (${code})`)));
    });
  const ready = next();
  child.send(start);
  await ready;
  return {
    stop: async (): Promise<Extract<FromWorkers, { type: 'done' }>> => {
      const done = next();
      child.send({ type: 'stop' } satisfies ToWorkers);
      return (await done) as Extract<FromWorkers, { type: 'done' }>;
    },
  };
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'optimer-bench-control-'));
  const nats = await startNatsServer({ storeDir: join(dir, 'nats') });
  const builds = [await load('this build', join(import.meta.dirname, '..', '..'))];
  if (values.baseline) builds.unshift(await load('baseline', values.baseline));
  try {
    const family = await buildFamily(join(dir, 'family'), { seed: 1 });
    const poolDir = join(dir, 'pool');
    await buildPool({
      base: family.base,
      vectors: Object.entries(family.checkpoints).map(([name, path]) => ({ name, path })),
      out: poolDir,
    });
    let runs = 0;
    const run = async (build: Build, workers: number, trials: number, fixedMs: number): Promise<RunResult> => {
      const { Coordinator, MemoryStudyStore, openLevelStore, parseStudyConfig } = build.coordinator;
      const name = `bench-${++runs}`;
      const config = parseStudyConfig(
        {
          name,
          pool: poolDir,
          objective: { sets: Object.entries(family.dev).map(([n, path]) => ({ name: n, path })) },
          trials,
          sampler: { name: values.tpe ? 'tpe' : 'random', seed: runs },
          baselines: false,
          failFast: { canary: 0, streak: 0 },
        },
        name,
        dir,
      );
      const store = values.store === 'memory' ? new MemoryStudyStore() : await openLevelStore(join(dir, `store-${runs}`));
      const times: number[] = [];
      // CPU from the first completion on: start-up (connects, streams, the first pulls) left out
      let cpu0: NodeJS.CpuUsage | undefined;
      let nats0: Promise<number> | undefined;
      const coord = await Coordinator.start({
        config,
        store,
        natsUrl: nats.url,
        log: silentLogger(),
        onEvent: (e) => {
          if (e.type !== 'trial.completed') return;
          times.push(performance.now());
          cpu0 ??= process.cpuUsage();
          nats0 ??= cpuOfTree(nats.process.pid);
        },
      });
      // the workers dealt over the processes as evenly as they go
      const procs = Math.min(workers, workerProcesses);
      const ws = await Promise.all(
        Array.from({ length: procs }, (_, p) =>
          startWorkers(build, {
            type: 'start',
            natsUrl: nats.url,
            idPrefix: `${name}-p${p}`,
            workers: Math.floor(workers / procs) + (p < workers % procs ? 1 : 0),
            fixedMs,
            cacheDir: join(dir, 'cache'),
          }),
        ),
      );
      await coord.done();
      const cpu = process.cpuUsage(cpu0);
      const natsMs = (await cpuOfTree(nats.process.pid)) - (await nats0!);
      const stopped = await Promise.all(ws.map((w) => w.stop()));
      const done = { dispatchMs: stopped.flatMap((d) => d.dispatchMs), cpuMs: stopped.reduce((t, d) => t + d.cpuMs, 0) };
      await coord.close();
      await store.close();
      // from the first completion to the last: the start-up (connects, first pulls) left out
      const span = (times.at(-1)! - times[0]!) / 1000;
      const dispatch = done.dispatchMs.sort((a, b) => a - b);
      const at = (q: number) => dispatch[Math.floor(dispatch.length * q)] ?? Number.NaN;
      return {
        trialsPerSecond: (times.length - 1) / span,
        medianDispatchMs: at(0.5),
        p90DispatchMs: at(0.9),
        coordinatorCpuMs: (cpu.user + cpu.system) / 1000 / (times.length - 1),
        workersCpuMs: done.cpuMs / trials,
        natsCpuMs: natsMs / (times.length - 1),
      };
    };

    const rows: (string | number)[][] = [
      [
        'build',
        'evaluator',
        'workers',
        'trials/s',
        'dispatch ms p50',
        'p90',
        'scaling efficiency',
        'CPU ms/trial: coordinator',
        'workers',
        'nats-server',
      ],
    ];
    const fixedMs = Number(values['fixed-ms']);
    const counts = values.workers.split(',').filter(Boolean).map(Number);
    const one = new Map<string, number>();
    const row = (b: Build, evaluator: string, workers: number, r: RunResult, efficiency: string) =>
      rows.push([
        b.label,
        evaluator,
        workers,
        r.trialsPerSecond.toFixed(1),
        r.medianDispatchMs.toFixed(2),
        r.p90DispatchMs.toFixed(1),
        efficiency,
        r.coordinatorCpuMs.toFixed(2),
        r.workersCpuMs.toFixed(2),
        r.natsCpuMs.toFixed(2),
      ]);
    // every row for each build in turn, so that a noisy minute hits both alike
    const noopTrials = Number(values['noop-trials']);
    if (noopTrials > 0) for (const b of builds) row(b, 'no-op', 16, await run(b, 16, noopTrials, 0), '-');
    for (const w of counts) {
      for (const b of builds) {
        const r = await run(b, w, w * Number(values['per-worker']), fixedMs);
        if (w === 1) one.set(b.label, r.trialsPerSecond);
        const base = one.get(b.label);
        row(b, `fixed ${fixedMs} ms`, w, r, base ? `${((100 * r.trialsPerSecond) / (w * base)).toFixed(0)}%` : '-');
      }
    }
    process.stdout.write(`store: ${values.store}; sampler: ${values.tpe ? 'tpe' : 'random'}\n${table(rows)}\n`);
  } finally {
    await nats.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
