import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { Coordinator } from '../coordinator/coordinator.js';
import type { JobRecord } from '../coordinator/store/records.js';
import { MemoryStudyStore } from '../coordinator/store/memory-store.js';
import { loadStudyConfig } from '../coordinator/study/config.js';
import { silentLogger } from '../shared/logging.js';
import { buildFamilyPool } from './helpers/family.js';
import { useNatsServer } from './helpers/nats.js';
import { Processes, writeStudyConfig } from './helpers/study.js';
import { useTempDir } from './helpers/temp.js';

const family = inject('family');
const cli = inject('cli');
const tmp = useTempDir('faults');
const nats = useNatsServer();
const procs = new Processes();
afterAll(() => procs.stopAll());

/** A real in-memory record whose writes start failing after `okWrites`, as a full disk would. */
class FailingStore extends MemoryStudyStore {
  failing = false;
  writes = 0;
  constructor(private readonly okWrites: number) {
    super('(failing memory)');
  }
  override async putJobs(study: string, jobs: readonly JobRecord[]): Promise<void> {
    if (this.failing || ++this.writes > this.okWrites) {
      this.failing = true;
      throw new Error('no space left on device');
    }
    await super.putJobs(study, jobs);
  }
}

describe('coordinator faults', () => {
  it('faults - a record that cannot be written stops the coordinator; a restart resumes from the record and records each trial once', async () => {
    const poolDir = join(tmp, 'pool');
    await buildFamilyPool(family, poolDir);
    const config = await loadStudyConfig(
      await writeStudyConfig(join(tmp, 'study.json'), family, poolDir, { name: 'full-disk', trials: 16 }),
    );
    procs.startWorkers(cli, nats.url, join(tmp, 'cache'), 2);
    const store = new FailingStore(12);
    const first = await Coordinator.start({ config, store, natsUrl: nats.url, log: silentLogger() });
    await expect(first.done()).rejects.toThrow('no space left on device');
    expect(first.complete).toBe(false);
    await first.close();
    const before = await store.listJobs('full-disk', 'TRIAL');
    expect(before.length).toBeGreaterThan(0);
    expect(before.length).toBeLessThan(16);

    // the disk has room again: the same record, a new coordinator
    store.failing = false;
    store.writes = Number.NEGATIVE_INFINITY;
    const second = await Coordinator.start({ config, store, natsUrl: nats.url, log: silentLogger() });
    await second.done();
    expect(second.complete).toBe(true);
    await second.close();
    const trials = await store.listJobs('full-disk', 'TRIAL');
    expect(trials.map((t) => t.number)).toEqual(Array.from({ length: 16 }, (_, i) => i));
    expect(trials.every((t) => t.state === 'complete' && Number.isFinite(t.value))).toBe(true);
    // what was recorded before the failure is unchanged
    for (const t of before.filter((x) => x.state === 'complete')) expect(trials[t.number]!.value).toBe(t.value);
  }, 120_000);
});
