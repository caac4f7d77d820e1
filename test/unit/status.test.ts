import { describe, expect, it } from 'vitest';
import { estimateEta } from '../../coordinator/status/eta.js';
import { studySummary, weightsArg } from '../../coordinator/status/status.js';
import type { JobRecord, StudyRecord } from '../../coordinator/store/records.js';
import { parseStudyConfig } from '../../coordinator/study/config.js';
import { parseWeights } from '../../shared/weights.js';

const config = parseStudyConfig(
  { name: 's', pool: '/p', objective: { sets: [{ name: 'a', path: 'a.jsonl', test: 't.jsonl' }] }, trials: 4 },
  'x',
  '/',
);
const study: StudyRecord = {
  name: 's',
  config,
  generation: 1,
  state: 'running',
  vectors: ['ja', 'zh'],
  bounds: { ja: [-1, 2], zh: [-1, 2] },
  createdAt: '2026-01-01T00:00:00.000Z',
  updatedAt: '2026-01-01T00:00:00.000Z',
};
const job = (kind: 'TRIAL' | 'TEST', number: number, state: JobRecord['state'], finishedMs?: number, value?: number): JobRecord => ({
  kind,
  number,
  label: 'tpe',
  params: { ja: 0.1 * number, zh: 1 / 3 },
  state,
  attempt: 1,
  attempts: [{ attempt: 1, issuedAt: '2026-01-01T00:00:00.000Z', outcome: state === 'complete' ? 'complete' : undefined }],
  ...(value !== undefined ? { value, scores: [{ name: 'a', score: value, tokens: 1 }] } : {}),
  createdAt: '2026-01-01T00:00:00.000Z',
  ...(finishedMs !== undefined ? { finishedAt: new Date(finishedMs).toISOString() } : {}),
});

describe('status', () => {
  it('status - weights in the --weights form parse back to the exact values', () => {
    const arg = weightsArg(['ja', 'zh'], { ja: 0.1 + 0.2, zh: -1 / 3 });
    expect(arg).toBe(`ja=${0.1 + 0.2},zh=${-1 / 3}`);
    expect(parseWeights(arg, ['ja', 'zh'])).toEqual(
      new Map([
        ['ja', 0.1 + 0.2],
        ['zh', -1 / 3],
      ]),
    );
  });

  it('status - ETA from the recent pace; unknown before two finishes; zero when nothing is left', () => {
    expect(estimateEta([1000], 5, 2000)).toBeNull();
    expect(estimateEta([0, 1000, 2000], 4, 2000)).toEqual({ seconds: 4, jobsPerMinute: 60 });
    expect(estimateEta([0, 1000], 0, 5000)).toEqual({ seconds: 0, jobsPerMinute: 0 });
  });

  it('status - the progress is of the current phase: the total does not jump when the tests begin', () => {
    const t0 = Date.parse('2026-01-01T00:00:00.000Z');
    const trials = [0, 1, 2, 3].map((n) => job('TRIAL', n, 'complete', t0 + n * 1000, 3 - n * 0.1));
    const during = studySummary(study, trials.slice(0, 3).concat(job('TRIAL', 3, 'running')), [], { workers: [], nowMs: t0 + 3000 });
    expect(during.progress).toEqual({ phase: 'trials', done: 3, total: 4 });
    expect(during.live).toBe(true);
    expect(during.eta?.seconds).toBeCloseTo(1.5, 6);
    const tests = studySummary(study, trials, [job('TEST', 0, 'running')]);
    expect(tests.progress).toEqual({ phase: 'tests', done: 0, total: 1 });
    expect(tests.live).toBe(false);
    expect(tests.eta).toBeNull();
    expect(tests.best?.trial).toBe(3);
    expect(tests.best?.weightsArg).toBe(`ja=${0.1 * 3},zh=${1 / 3}`);
  });
});
