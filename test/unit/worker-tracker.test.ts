import { describe, expect, it } from 'vitest';
import { queueTarget, WorkerTracker } from '../../coordinator/worker-tracker.js';
import type { StudyAnnouncement, WorkerStatus } from '../../shared/index.js';
import { testCapabilities } from '../helpers/capabilities.js';

const status = (worker: string, state: WorkerStatus['state'] = 'idle'): WorkerStatus => ({
  worker,
  state,
  provider: 'cpu',
  study: '',
  generation: 0,
  kind: 'TRIAL',
  trial: 0,
  attempt: 0,
  heartbeatMs: 1000,
});

describe('worker tracker', () => {
  it('worker tracker - the transfers under way are summed over the live workers; none is null', () => {
    const t = new WorkerTracker(3);
    const fetching = (worker: string, bytes: number, doneBytes: number, bytesPerSecond: number): WorkerStatus => ({
      ...status(worker),
      transfers: [{ blob: 'ab', bytes, doneBytes, bytesPerSecond, fromPeers: 0, fromSeeders: doneBytes, peers: 0, seconds: 1 }],
    });
    t.heard(status('idle'), 0);
    expect(t.transfers()).toBeNull();
    t.heard(fetching('a', 100, 40, 10), 0);
    t.heard(fetching('b', 300, 60, 30), 0);
    expect(t.transfers()).toEqual({ workers: 2, bytes: 400, doneBytes: 100, bytesPerSecond: 40 });
    // a worker that stopped, or finished its transfer, no longer counts
    t.heard(status('b', 'stopped'), 10);
    t.heard(status('a'), 20);
    expect(t.transfers()).toBeNull();
  });

  it('worker tracker - a worker is seen once, lost after three silent heartbeats, and seen again when it speaks', () => {
    const t = new WorkerTracker(3);
    expect(t.heard(status('a'), 0).map((c) => c.type)).toEqual(['seen']);
    expect(t.heard(status('a', 'busy'), 500)).toEqual([]);
    expect(t.check(3500)).toEqual([]);
    const lost = t.check(3501);
    expect(lost.map((c) => [c.type, c.worker.worker])).toEqual([['lost', 'a']]);
    expect(t.check(9000)).toEqual([]); // reported once
    expect(t.heard(status('a'), 9001).map((c) => c.type)).toEqual(['seen']);
  });

  it('worker tracker - a worker that says it stopped is lost at once', () => {
    const t = new WorkerTracker(3);
    t.heard(status('a'), 0);
    t.heard(status('b'), 0);
    expect(t.heard(status('a', 'stopped'), 10)).toMatchObject([{ type: 'lost', silentMs: 0 }]);
    expect(t.check(10_000).map((c) => c.worker.worker)).toEqual(['b']);
    expect(t.list().map((w) => [w.worker, w.lost])).toEqual([
      ['a', true],
      ['b', true],
    ]);
  });

  it('worker tracker - the queue target: an idle worker that may serve the study asks for one, plus a depth that grows with the workers', () => {
    const t = new WorkerTracker(3);
    const study = { study: 's', requirements: { provider: '', minMemoryGb: 16 }, department: '' } as unknown as StudyAnnouncement;
    const o = { minDepth: 1, perWorker: 0.25 };
    expect(t.serving(study)).toEqual({ live: 0, idle: 0 });
    // nobody there yet: the minimum depth waits for the first worker
    expect(queueTarget(t.serving(study), o)).toBe(1);
    t.heard({ ...status('big'), capabilities: testCapabilities({ memoryGb: 32 }) }, 0);
    t.heard({ ...status('old') }, 0); // says nothing of itself: may take anything
    t.heard({ ...status('busy', 'busy'), capabilities: testCapabilities({ memoryGb: 64 }) }, 0);
    t.heard({ ...status('small'), capabilities: testCapabilities({ memoryGb: 4 }) }, 0); // below the requirement
    t.heard({ ...status('other'), capabilities: testCapabilities({ memoryGb: 64, studies: ['t'] }) }, 0); // limited to another study
    t.heard({ ...status('owner'), capabilities: testCapabilities({ memoryGb: 64, onlyWhenIdle: true, gpuIdle: false }) }, 0); // its GPU is in use
    t.heard({ ...status('gone'), capabilities: testCapabilities({ memoryGb: 64 }) }, 0);
    t.heard({ ...status('gone', 'stopped'), capabilities: testCapabilities({ memoryGb: 64 }) }, 1);
    expect(t.serving(study)).toEqual({ live: 3, idle: 2 });
    expect(queueTarget(t.serving(study), o)).toBe(2 + 1);
    // JetStream's count of waiting pulls wins when it is higher (statuses lost, or none sent)
    expect(queueTarget(t.serving(study), { ...o, waiting: 5 })).toBe(5 + 1);
    // 16 workers busy: a quarter of them ahead
    expect(queueTarget({ live: 16, idle: 0 }, o)).toBe(4);
    expect(queueTarget({ live: 16, idle: 3 }, { ...o, minDepth: 6 })).toBe(3 + 6);
  });
});
