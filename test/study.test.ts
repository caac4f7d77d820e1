import { join } from 'node:path';
import { connect } from 'nats';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { Coordinator } from '../coordinator/coordinator.js';
import { buildReport } from '../coordinator/report.js';
import { openLevelStore } from '../coordinator/store/level-store.js';
import { loadStudyConfig } from '../coordinator/study/config.js';
import { silentLogger } from '../shared/logging.js';
import { RESULTS_STREAM, subjects, resultCodec } from '../shared/wire.js';
import { buildFamilyPool } from './helpers/family.js';
import { useNatsServer } from './helpers/nats.js';
import { Processes, exited, outputOf, writeStudyConfig } from './helpers/study.js';
import { useTempDir } from './helpers/temp.js';
import { waitFor } from './helpers/wait.js';

const family = inject('family');
const cli = inject('cli');
const tmp = useTempDir('study');
const nats = useNatsServer();
const procs = new Processes();
afterAll(() => procs.stopAll());

describe('distributed study', () => {
  it('study - two workers run 40 trials, each recorded exactly once, beating model averaging', async () => {
    const poolDir = join(tmp, 'pool');
    await buildFamilyPool(family, poolDir);
    const config = await loadStudyConfig(await writeStudyConfig(join(tmp, 'study.json'), family, poolDir, { name: 'two-workers' }));
    const store = await openLevelStore(join(tmp, 'db'));
    const workers = procs.startWorkers(cli, nats.url, join(tmp, 'cache'), 2);
    const coordinator = await Coordinator.start({ config, store, natsUrl: nats.url, log: silentLogger() });
    // hostile input on the results subject must not disturb the study
    const nc = await connect({ servers: nats.url });
    const js = nc.jetstream();
    await js.publish(subjects.results('two-workers'), new TextEncoder().encode('not a protobuf'));
    await js.publish(
      subjects.results('two-workers'),
      resultCodec.encode({
        study: 'two-workers',
        generation: 1,
        kind: 'TRIAL',
        trial: 0,
        label: 'x',
        attempt: 7,
        created: 0,
        worker: 'intruder',
        scores: [],
        timings: { fetchMs: 0, mergeMs: 0, evalMs: 0 },
        error: null,
        provider: 'cpu',
      }),
    );
    await coordinator.done();
    expect(coordinator.complete).toBe(true);
    await coordinator.close();

    const trials = await store.listJobs('two-workers', 'TRIAL');
    expect(trials.map((t) => t.number)).toEqual(Array.from({ length: 40 }, (_, i) => i));
    expect(trials.every((t) => t.state === 'complete' && Number.isFinite(t.value))).toBe(true);
    expect(trials.slice(0, 6).map((t) => t.label)).toEqual(['base', 'only:ja', 'only:zh', 'only:math', 'only:code', 'average']);
    // both workers took part, and no result was recorded twice or from the intruder
    expect(new Set(trials.map((t) => t.worker))).toEqual(new Set(['test-1', 'test-2']));
    const report = await buildReport(store, 'two-workers');
    expect(report.trials).toEqual({ budget: 40, created: 40, complete: 40, failed: 0, running: 0 });
    const average = report.baselines.find((b) => b.label === 'average')!;
    expect(report.best!.objective!).toBeLessThan(average.objective!);
    for (const b of report.baselines) expect(report.best!.objective!).toBeLessThanOrEqual(b.objective!);
    // the test sets were evaluated for the best merge and every baseline
    expect(report.best!.test).not.toBeNull();
    expect(report.baselines.every((b) => b.test !== null)).toBe(true);
    expect(report.compute.evalSeconds).toBeGreaterThan(0);
    // every result delivered to the coordinator was acknowledged
    const jsm = await nc.jetstreamManager();
    const info = await jsm.consumers.info(RESULTS_STREAM, 'optimer-coordinator-two-workers');
    expect(info.num_ack_pending).toBe(0);
    await nc.close();
    await store.close();
    await Promise.all(
      workers.map((w) => {
        w.kill('SIGTERM');
        return exited(w, 20_000);
      }),
    );
  }, 180_000);

  it('study - a coordinator killed mid-study resumes and ends with exactly the budgeted trials', async () => {
    const poolDir = join(tmp, 'pool-resume');
    await buildFamilyPool(family, poolDir);
    const configPath = await writeStudyConfig(join(tmp, 'resume.json'), family, poolDir, { name: 'resume', trials: 30 });
    const storeDir = join(tmp, 'store-resume');
    procs.startWorkers(cli, nats.url, join(tmp, 'cache-resume'), 2);
    const args = ['run', configPath, '--nats', nats.url, '--workers', '0', '--store', storeDir, '--json', '--log-level', 'info'];
    const first = procs.start(cli, args);
    // count recorded results through NATS (the store is locked by the running coordinator)
    const nc = await connect({ servers: nats.url });
    const jsm = await nc.jetstreamManager();
    await waitFor(
      async () => {
        const info = await jsm.consumers.info(RESULTS_STREAM, 'optimer-coordinator-resume').catch(() => undefined);
        return (info?.ack_floor.stream_seq ?? 0) > 0 && (info?.num_pending ?? 0) + (info?.delivered.consumer_seq ?? 0) >= 10;
      },
      60_000,
      '10 results',
    );
    first.kill('SIGKILL');
    await exited(first);
    await nc.close();

    const mid = await openLevelStore(join(storeDir, 'db'), { create: false });
    const before = await mid.listJobs('resume', 'TRIAL');
    await mid.close();
    expect(before.length).toBeGreaterThan(0);
    expect(before.length).toBeLessThan(30);

    const second = procs.start(cli, args);
    const code = await exited(second, 60_000).catch((e: Error) => {
      throw new Error(`${e.message}\n${outputOf(second).err.slice(-3000)}`);
    });
    expect(code).toBe(0);
    const report = JSON.parse(outputOf(second).out);
    expect(report.state).toBe('complete');
    expect(report.trials).toEqual({ budget: 30, created: 30, complete: 30, failed: 0, running: 0 });
    const store = await openLevelStore(join(storeDir, 'db'), { create: false });
    const trials = await store.listJobs('resume', 'TRIAL');
    expect(trials.map((t) => t.number)).toEqual(Array.from({ length: 30 }, (_, i) => i));
    // what was recorded before the kill is still there, unchanged
    for (const t of before.filter((x) => x.state === 'complete')) expect(trials[t.number]!.value).toBe(t.value);
    await store.close();

    // a larger budget extends the same study
    const extended = await writeStudyConfig(join(tmp, 'resume.json'), family, poolDir, { name: 'resume', trials: 34 });
    const third = procs.start(cli, ['run', extended, '--nats', nats.url, '--workers', '0', '--store', storeDir, '--json']);
    expect(await exited(third)).toBe(0);
    expect(JSON.parse(outputOf(third).out).trials).toEqual({ budget: 34, created: 34, complete: 34, failed: 0, running: 0 });
  }, 240_000);
});
