import { join } from 'node:path';
import { connect } from 'nats';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { Coordinator } from '../coordinator/coordinator.js';
import { MemoryStudyStore } from '../coordinator/store/memory-store.js';
import { loadStudyConfig } from '../coordinator/study/config.js';
import { silentLogger } from '../shared/logging.js';
import { RESULTS_STREAM, subjects, TRIALS_STREAM, workConsumer } from '../shared/wire.js';
import { buildFamilyPool } from './helpers/family.js';
import { useNatsServer } from './helpers/nats.js';
import { outputOf, Processes, writeStudyConfig } from './helpers/study.js';
import { useTempDir } from './helpers/temp.js';
import { waitFor } from './helpers/wait.js';

const family = inject('family');
const cli = inject('cli');
const tmp = useTempDir('abandoned');
const nats = useNatsServer();
const procs = new Processes();
afterAll(() => procs.stopAll());

describe('abandoned studies', () => {
  it('abandoned - a worker leaves the proposals of a study no coordinator runs, and takes them once it resumes', async () => {
    const poolDir = join(tmp, 'pool');
    await buildFamilyPool(family, poolDir);
    const config = await loadStudyConfig(
      await writeStudyConfig(join(tmp, 'study.json'), family, poolDir, { name: 'left', trials: 10, failFast: { canary: 0 } }),
    );
    const store = new MemoryStudyStore();
    // a coordinator publishes its first proposals, then stops before any worker came
    const first = await Coordinator.start({ config, store, natsUrl: nats.url, log: silentLogger(), queueDepth: 3 });
    const nc = await connect({ servers: nats.url });
    const jsm = await nc.jetstreamManager();
    const queued = async () => (await jsm.consumers.info(TRIALS_STREAM, workConsumer('left'))).num_pending;
    await waitFor(async () => (await queued()) >= 3, 5000, 'three proposals in the queue');
    await first.close();
    expect(await queued()).toBe(3);

    const [worker] = procs.startWorkers(cli, nats.url, join(tmp, 'cache'), 1, 'info');
    // once the worker has looked at the study (its start takes seconds on a loaded machine),
    // and a study-list period more in which it could have taken a proposal
    await waitFor(() => /no coordinator runs this study/.test(outputOf(worker!).err), 60_000, 'the worker to look at the study');
    await new Promise((r) => setTimeout(r, 3000));
    // nothing was taken and nothing answered: the proposals wait for their coordinator
    const info = await jsm.consumers.info(TRIALS_STREAM, workConsumer('left'));
    expect(info.num_pending).toBe(3);
    expect(info.num_ack_pending).toBe(0);
    const results = await jsm.streams.info(RESULTS_STREAM, { subjects_filter: subjects.results('left') });
    expect(results.state.subjects?.[subjects.results('left')] ?? 0).toBe(0);

    // resumed, the study completes on that worker, each trial once
    const second = await Coordinator.start({ config, store, natsUrl: nats.url, log: silentLogger() });
    await second.done();
    expect(second.complete).toBe(true);
    await second.close();
    const trials = await store.listJobs('left', 'TRIAL');
    expect(trials.map((t) => t.number)).toEqual(Array.from({ length: 10 }, (_, i) => i));
    expect(trials.every((t) => t.state === 'complete')).toBe(true);
    await nc.close();
  }, 120_000);
});
