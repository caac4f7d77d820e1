/**
 * The control-plane benchmark's workers: a child process that runs N in-process Worker
 * instances with the bench-only fixed-time evaluator, so that they share a process with each
 * other (16 processes would not fit on 2 cores) but not with the coordinator, as on a real mesh.
 * Driven over IPC by run.ts: `start` → `ready`; `stop` → `done` with the dispatch latencies.
 * `--dist DIR` loads the Worker of another build (to measure it against this one in one run).
 */
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

type WorkerModule = typeof import('../../worker/index.js');
type SharedModule = typeof import('../../shared/index.js');

export type ToWorkers =
  | { type: 'start'; natsUrl: string; idPrefix: string; workers: number; fixedMs: number; cacheDir: string }
  | { type: 'stop' };
/** `cpuMs`: this process's CPU from the first proposal a worker held to the stop (start-up and close left out) */
export type FromWorkers = { type: 'ready' } | { type: 'done'; dispatchMs: number[]; cpuMs: number };

const { values } = parseArgs({ options: { dist: { type: 'string' } } });
const dist = values.dist ?? join(import.meta.dirname, '..', '..');
const { Worker } = (await import(pathToFileURL(join(dist, 'worker', 'index.js')).href)) as WorkerModule;
const { silentLogger } = (await import(pathToFileURL(join(dist, 'shared', 'index.js')).href)) as SharedModule;

const send = (m: FromWorkers) => process.send!(m);
let workers: Awaited<ReturnType<WorkerModule['Worker']['start']>>[] = [];
const dispatchMs: number[] = [];
let cpu: NodeJS.CpuUsage | undefined;

process.on('message', (m: ToWorkers) => {
  void (async () => {
    if (m.type === 'start') {
      workers = await Promise.all(
        Array.from({ length: m.workers }, (_, i) =>
          Worker.start({
            natsUrl: m.natsUrl,
            cacheDir: m.cacheDir,
            id: `${m.idPrefix}-w${i}`,
            log: silentLogger(),
            // nothing to fetch or serve, and no GPU to look for: only the control plane is measured
            serve: false,
            advertise: { deviceName: 'bench', memoryGb: 0 },
            benchFixedEvalMs: m.fixedMs,
            benchOnDispatch: (ms) => {
              cpu ??= process.cpuUsage();
              dispatchMs.push(ms);
            },
          }),
        ),
      );
      send({ type: 'ready' });
    } else {
      const used = process.cpuUsage(cpu);
      await Promise.all(workers.map((w) => w.close()));
      send({ type: 'done', dispatchMs, cpuMs: (used.user + used.system) / 1000 });
      process.disconnect();
    }
  })();
});
