import { join } from 'node:path';
import { connect } from 'nats';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { openLevelStore } from '../coordinator/store/level-store.js';
import { RESULTS_STREAM } from '../shared/wire.js';
import { buildFamilyPool } from './helpers/family.js';
import { useNatsServer } from './helpers/nats.js';
import { Processes, exited, outputOf, writeStudyConfig } from './helpers/study.js';
import { useTempDir } from './helpers/temp.js';
import { waitFor } from './helpers/wait.js';

const family = inject('family');
const cli = inject('cli');
const tmp = useTempDir('lock');
const nats = useNatsServer();
const procs = new Processes();
const TRIALS = 150;
afterAll(() => procs.stopAll());

describe('study lock', () => {
  it('lock - a second coordinator of the same study on the same NATS, another store, is refused; the first completes', async () => {
    const poolDir = join(tmp, 'pool');
    await buildFamilyPool(family, poolDir);
    const configPath = await writeStudyConfig(join(tmp, 'study.json'), family, poolDir, { name: 'locked', trials: TRIALS });
    // one worker, stopped (SIGSTOP) while the second coordinator tries, so the first cannot finish
    // the study first however fast its trials are; another worker after
    const [worker] = procs.startWorkers(cli, nats.url, join(tmp, 'cache'), 1);
    const storeA = join(tmp, 'store-a');
    const run = (store: string) => ['run', configPath, '--nats', nats.url, '--workers', '0', '--store', store, '--json'];
    const first = procs.start(cli, run(storeA));
    // the first runs trials before the second starts
    const nc = await connect({ servers: nats.url });
    const jsm = await nc.jetstreamManager();
    await waitFor(
      async () => {
        const info = await jsm.consumers.info(RESULTS_STREAM, 'optimer-coordinator-locked').catch(() => undefined);
        return (info?.delivered.stream_seq ?? 0) >= 2;
      },
      60_000,
      'the first coordinator to record results',
    );
    await nc.close();
    worker!.kill('SIGSTOP');

    expect(first.exitCode, outputOf(first).err).toBeNull();
    const started = Date.now();
    const second = procs.start(cli, run(join(tmp, 'store-b')));
    const code = await exited(second, 30_000);
    const err = outputOf(second).err;
    expect(code, err).toBe(2);
    expect(err).toMatch(/study 'locked' is run by another coordinator \(host .+, pid \d+, since .+\)/);
    expect(err).toContain('free within 10 s after it stops');
    // refused on seeing the lock refreshed, well before the TTL + margin
    expect(Date.now() - started).toBeLessThan(13_000);
    expect(first.exitCode).toBeNull();
    worker!.kill('SIGCONT');
    procs.start(cli, ['worker', '--nats', nats.url, '--cache', join(tmp, 'cache-2'), '--id', 'test-2', '--log-level', 'warn']);

    const firstCode = await exited(first, 120_000);
    expect(firstCode, outputOf(first).err.slice(-3000)).toBe(0);
    const report = JSON.parse(outputOf(first).out);
    expect(report.trials).toEqual({ budget: TRIALS, created: TRIALS, complete: TRIALS, failed: 0, running: 0 });
    const store = await openLevelStore(join(storeA, 'db'), { create: false });
    const trials = await store.listJobs('locked', 'TRIAL');
    expect(trials.map((t) => t.number)).toEqual(Array.from({ length: TRIALS }, (_, i) => i));
    expect(trials.every((t) => t.state === 'complete' && t.attempt === 1)).toBe(true);
    await store.close();

    // released on a clean stop: the next coordinator takes the study at once (no wait line)
    const third = procs.start(cli, run(storeA));
    expect(await exited(third, 30_000)).toBe(0);
    expect(outputOf(third).err).not.toContain('waiting up to');
  }, 240_000);
});
