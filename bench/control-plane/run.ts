/**
 * Control-plane benchmark: how many trials per second the coordinator and the NATS queues hand
 * out, with the evaluation taken away. Workers are in-process Worker instances (16 processes
 * would not fit on a 2-core machine) with the bench-only fixed-time evaluator
 * (`benchFixedEvalMs`: no merge, no ONNX Runtime, a wait and a made-up score), a real
 * nats-server, a real coordinator (random sampler, in-memory record) on the built-in family.
 * Usage: npm run bench:control -- [--noop-trials 400] [--fixed-ms 100] [--per-worker 12]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { table } from '../../cli/output.js';
import { Coordinator, MemoryStudyStore, parseStudyConfig } from '../../coordinator/index.js';
import { buildFamily, buildPool, silentLogger, startNatsServer } from '../../shared/index.js';
import { Worker } from '../../worker/index.js';

const { values } = parseArgs({
  options: {
    'noop-trials': { type: 'string', default: '400' },
    'fixed-ms': { type: 'string', default: '100' },
    'per-worker': { type: 'string', default: '12' },
    workers: { type: 'string', default: '1,2,4,8,16' },
  },
});

interface RunResult {
  trialsPerSecond: number;
  medianDispatchMs: number;
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'optimer-bench-control-'));
  const nats = await startNatsServer({ storeDir: join(dir, 'nats') });
  try {
    const family = await buildFamily(join(dir, 'family'), { seed: 1 });
    const poolDir = join(dir, 'pool');
    await buildPool({
      base: family.base,
      vectors: Object.entries(family.checkpoints).map(([name, path]) => ({ name, path })),
      out: poolDir,
    });
    let runs = 0;
    const run = async (workers: number, trials: number, fixedMs: number): Promise<RunResult> => {
      const name = `bench-${++runs}`;
      const config = parseStudyConfig(
        {
          name,
          pool: poolDir,
          objective: { sets: Object.entries(family.dev).map(([n, path]) => ({ name: n, path })) },
          trials,
          sampler: { name: 'random', seed: runs },
          baselines: false,
          failFast: { canary: 0, streak: 0 },
        },
        name,
        dir,
      );
      const dispatch: number[] = [];
      const times: number[] = [];
      const coord = await Coordinator.start({
        config,
        store: new MemoryStudyStore(),
        natsUrl: nats.url,
        log: silentLogger(),
        onEvent: (e) => {
          if (e.type === 'trial.completed') times.push(performance.now());
        },
      });
      const ws = await Promise.all(
        Array.from({ length: workers }, (_, i) =>
          Worker.start({
            natsUrl: nats.url,
            cacheDir: join(dir, 'cache'),
            id: `${name}-w${i}`,
            log: silentLogger(),
            benchFixedEvalMs: fixedMs,
            benchOnDispatch: (ms) => dispatch.push(ms),
          }),
        ),
      );
      await coord.done();
      await Promise.all(ws.map((w) => w.close()));
      await coord.close();
      // from the first completion to the last: the start-up (connects, first pulls) left out
      const span = (times.at(-1)! - times[0]!) / 1000;
      dispatch.sort((a, b) => a - b);
      return { trialsPerSecond: (times.length - 1) / span, medianDispatchMs: dispatch[Math.floor(dispatch.length / 2)] ?? Number.NaN };
    };

    const noop = await run(16, Number(values['noop-trials']), 0);
    const fixedMs = Number(values['fixed-ms']);
    const counts = values.workers.split(',').map(Number);
    const scaling: { workers: number; r: RunResult }[] = [];
    for (const w of counts) scaling.push({ workers: w, r: await run(w, w * Number(values['per-worker']), fixedMs) });
    const one = scaling.find((s) => s.workers === 1)?.r.trialsPerSecond ?? Number.NaN;
    process.stdout.write(
      `${table([
        ['evaluator', 'workers', 'trials/s', 'median dispatch ms', 'scaling efficiency'],
        ['no-op', 16, noop.trialsPerSecond.toFixed(1), noop.medianDispatchMs.toFixed(2), '-'],
        ...scaling.map((s) => [
          `fixed ${fixedMs} ms`,
          s.workers,
          s.r.trialsPerSecond.toFixed(2),
          s.r.medianDispatchMs.toFixed(2),
          `${((100 * s.r.trialsPerSecond) / (s.workers * one)).toFixed(0)}%`,
        ]),
      ])}\n`,
    );
  } finally {
    await nats.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
