import { describe, expect, it } from 'vitest';
import { WorkerTracker } from '../../coordinator/worker-tracker.js';
import type { WorkerStatus } from '../../shared/index.js';

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
});
