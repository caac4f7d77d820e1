import { join } from 'node:path';
import { connect } from 'nats';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { Coordinator } from '../coordinator/coordinator.js';
import type { StudyEvent } from '../coordinator/events.js';
import { openLevelStore } from '../coordinator/store/level-store.js';
import { MemoryStudyStore } from '../coordinator/store/memory-store.js';
import { loadStudyConfig } from '../coordinator/study/config.js';
import { silentLogger } from '../shared/logging.js';
import { STUDIES_BUCKET, TRIALS_STREAM, workConsumer } from '../shared/wire.js';
import { buildFamilyPool } from './helpers/family.js';
import { useNatsServer } from './helpers/nats.js';
import { exited, outputOf, Processes, writeStudyConfig } from './helpers/study.js';
import { useTempDir } from './helpers/temp.js';

const family = inject('family');
const cli = inject('cli');
const tmp = useTempDir('mesh');
const nats = useNatsServer();
const procs = new Processes();
afterAll(() => procs.stopAll());

describe('many studies on one mesh', () => {
  it('mesh - two studies with different leases run at once on one nats-server and two workers, each trial recorded once', async () => {
    const poolDir = join(tmp, 'pool');
    await buildFamilyPool(family, poolDir);
    const studies = [
      { name: 'alpha', ackWaitSeconds: 7, seed: 1 },
      { name: 'beta', ackWaitSeconds: 13, seed: 2 },
    ];
    const TRIALS = 14;
    const workers = procs.startWorkers(cli, nats.url, join(tmp, 'cache'), 2, 'info');
    // the record behind either implementation of the store port
    const stores = [await openLevelStore(join(tmp, 'db-alpha')), new MemoryStudyStore()];
    const events: Record<string, StudyEvent[]> = { alpha: [], beta: [] };
    const coordinators = await Promise.all(
      studies.map(async (s, i) =>
        Coordinator.start({
          config: await loadStudyConfig(
            await writeStudyConfig(join(tmp, `${s.name}.json`), family, poolDir, {
              name: s.name,
              trials: TRIALS,
              sampler: { name: 'tpe', seed: s.seed },
              lease: { ackWaitSeconds: s.ackWaitSeconds },
            }),
          ),
          store: stores[i]!,
          natsUrl: nats.url,
          log: silentLogger(),
          onEvent: (e) => events[s.name]!.push(e),
        }),
      ),
    );
    // each study has its own work consumer, with its own lease
    const nc = await connect({ servers: nats.url });
    const jsm = await nc.jetstreamManager();
    for (const s of studies) {
      const info = await jsm.consumers.info(TRIALS_STREAM, workConsumer(s.name));
      expect(info.config.ack_wait).toBe(s.ackWaitSeconds * 1e9);
      expect(info.config.filter_subject).toBe(`optimer.v1.trials.${s.name}`);
    }
    await Promise.all(coordinators.map((c) => c.done()));
    expect(coordinators.every((c) => c.complete)).toBe(true);
    await Promise.all(coordinators.map((c) => c.close()));

    const byWorker = new Set<string>();
    for (const [i, s] of studies.entries()) {
      const trials = await stores[i]!.listJobs(s.name, 'TRIAL');
      expect(trials.map((t) => t.number)).toEqual(Array.from({ length: TRIALS }, (_, n) => n));
      expect(trials.every((t) => t.state === 'complete' && Number.isFinite(t.value) && t.attempt === 1)).toBe(true);
      for (const t of trials) byWorker.add(t.attempts[0]!.worker!);
      // the events tell the same story as the record: one completion per trial and test
      const tests = await stores[i]!.listJobs(s.name, 'TEST');
      const completed = events[s.name]!.filter((e) => e.type === 'trial.completed');
      expect(completed.length).toBe(TRIALS + tests.length);
      expect(
        new Set(completed.map((e) => `${e.type === 'trial.completed' ? e.kind : ''}${e.type === 'trial.completed' ? e.trial : ''}`)).size,
      ).toBe(completed.length);
      expect(events[s.name]!.filter((e) => e.type === 'trial.created').length).toBe(TRIALS + tests.length);
      expect(
        events[s.name]!.filter((e) => e.type === 'worker.seen')
          .map((e) => (e.type === 'worker.seen' ? e.worker : ''))
          .sort(),
      ).toEqual(['test-1', 'test-2']);
      expect(events[s.name]!.at(-1)).toEqual({ type: 'phase', study: s.name, phase: 'complete' });
    }
    // both workers did work; how often one alternates between the studies depends on the
    // heartbeats it heard (the fair share breaks ties by order, so two workers may also split the
    // studies cleanly: CI saw one switch), so only what is certain is asserted: every study served,
    // and below, a worker that served a study more than once loaded it once
    expect(byWorker.size).toBe(2);
    await Promise.all(
      workers.map((w) => {
        w.kill('SIGTERM');
        return exited(w, 20_000);
      }),
    );
    for (const w of workers) {
      const ready = outputOf(w)
        .err.split('\n')
        .filter((l) => l.includes('"study ready"'))
        .map((l) => JSON.parse(l).study as string);
      expect(ready.length).toBe(new Set(ready).size);
    }
    // complete studies are taken off the board: workers stop pulling their queues
    const kv = await nc.jetstream().views.kv(STUDIES_BUCKET, { bindOnly: true });
    const left: string[] = [];
    for await (const k of await kv.keys()) left.push(k);
    expect(left).toEqual([]);
    await nc.close();
    await Promise.all(stores.map((s) => s.close()));
  }, 180_000);
});
