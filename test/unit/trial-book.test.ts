import { describe, expect, it } from 'vitest';
import type { JobRecord } from '../../coordinator/store/records.js';
import { type BookSettings, type Effect, mergeTransitions, type Transition, TrialBook } from '../../coordinator/trial-book.js';
import type { Result } from '../../shared/index.js';

const T0 = new Date('2026-12-01T00:00:00Z');
const at = (s: number) => new Date(T0.getTime() + s * 1000);

function settings(over: Partial<BookSettings> = {}): BookSettings {
  return {
    study: 's',
    generation: 1,
    budget: 3,
    maxAttempts: 2,
    trialTimeoutMs: 60_000,
    direction: 'minimize',
    devSets: [
      { name: 'a', weight: 1 },
      { name: 'b', weight: 3 },
    ],
    testSets: [],
    baselineLabels: new Set(['base']),
    // off unless a test is about them: the other transitions stay as they were
    canary: 0,
    streak: 0,
    ...over,
  };
}

function result(trial: number, over: Partial<Result> = {}): Result {
  return {
    study: 's',
    generation: 1,
    kind: 'TRIAL',
    trial,
    label: 'tpe',
    attempt: 1,
    created: 0,
    worker: 'w1',
    scores: [
      { name: 'a', score: 2, tokens: 10 },
      { name: 'b', score: 4, tokens: 10 },
    ],
    timings: { fetchMs: 1, mergeMs: 2, evalMs: 3 },
    error: null,
    provider: 'cpu',
    ...over,
  };
}

const types = (t: Transition) => t.effects.map((e) => e.type);
const recorded = (t: Transition): JobRecord[] => t.effects.flatMap((e: Effect) => (e.type === 'record' ? e.jobs : []));
const events = (t: Transition) => t.events.map((e) => e.type);
/** Every timed-out job expired, one transition each, as the coordinator does. */
function expireAll(book: TrialBook, now: Date): Transition {
  const ts = book.timedOut(now).map((j) => book.expire(j.kind, j.number, now));
  return { effects: ts.flatMap((t) => t.effects), events: ts.flatMap((t) => t.events) };
}

function bookWith(n: number, over: Partial<BookSettings> = {}): TrialBook {
  const book = TrialBook.restore(settings(over), [], []);
  for (let i = 0; i < n; i++) book.create(i === 0 ? 'base' : 'tpe', { x: i / 10 }, T0);
  return book;
}

describe('trial book', () => {
  it('trial book - a new trial is recorded before it is published, and the sampler sees it running', () => {
    const book = bookWith(0);
    const t = book.create('base', { x: 0 }, T0);
    expect(types(t)).toEqual(['record', 'publish']);
    expect(recorded(t)[0]).toMatchObject({
      kind: 'TRIAL',
      number: 0,
      state: 'running',
      attempt: 1,
      attempts: [{ attempt: 1, issuedAt: T0.toISOString() }],
    });
    expect(events(t)).toEqual(['trial.created']);
    expect(book.samplerView()).toMatchObject([{ number: 0, state: 'running', params: { x: 0 } }]);
    expect(book.samplerView()[0]!.value).toBeUndefined();
    expect(book.nextTrialNumber).toBe(1);
    // the queue sequence is kept (to withdraw the proposal later), once
    expect(types(book.published('TRIAL', 0, 1, 42))).toEqual(['record']);
    expect(types(book.published('TRIAL', 0, 1, 42))).toEqual([]);
    expect(recorded(book.published('TRIAL', 0, 1, 43))[0]!.attempts[0]!.seq).toBe(43);
  });

  it('trial book - a result completes the current attempt with the weighted objective; a duplicate changes nothing', () => {
    const book = bookWith(1);
    const t = book.onResult(result(0), at(5));
    expect(t.disposition).toBe('recorded');
    const job = recorded(t)[0]!;
    expect(job).toMatchObject({ state: 'complete', value: (2 * 1 + 4 * 3) / 4, worker: 'w1', provider: 'cpu' });
    expect(job.attempts[0]).toMatchObject({ outcome: 'complete', worker: 'w1', finishedAt: at(5).toISOString() });
    expect(t.events).toEqual([
      { type: 'trial.completed', study: 's', kind: 'TRIAL', trial: 0, attempt: 1, label: 'base', worker: 'w1', value: 3.5 },
    ]);
    const again = book.onResult(
      result(0, {
        worker: 'w2',
        scores: [
          { name: 'a', score: 0, tokens: 1 },
          { name: 'b', score: 0, tokens: 1 },
        ],
      }),
      at(6),
    );
    expect(again.disposition).toBe('not-current');
    expect(again.effects).toEqual([]);
    expect(book.samplerView()[0]).toMatchObject({ number: 0, state: 'complete', params: { x: 0 }, value: 3.5 });
  });

  it('trial book - results of another study or generation, of an unknown trial or of a superseded attempt are dropped', () => {
    const book = bookWith(1);
    expect(book.onResult(result(0, { generation: 2 }), T0).disposition).toBe('stale');
    expect(book.onResult(result(0, { study: 'other' }), T0).disposition).toBe('stale');
    expect(book.onResult(result(7), T0).disposition).toBe('not-current');
    expect(book.onResult(result(0, { attempt: 2 }), T0).disposition).toBe('not-current');
    // a result for an earlier record of the same number (tests re-created after a budget grew)
    expect(book.onResult(result(0, { created: T0.getTime() - 1 }), T0).disposition).toBe('not-current');
    // after a timeout the trial runs as attempt 2: attempt 1's late result no longer counts
    expireAll(book, at(61));
    expect(book.onResult(result(0, { attempt: 1 }), at(62)).disposition).toBe('not-current');
    expect(book.onResult(result(0, { attempt: 2, created: T0.getTime() }), at(63)).disposition).toBe('recorded');
  });

  it('trial book - timeouts are one transition per job, so a failure to carry out one leaves the others as recorded', () => {
    const book = bookWith(2);
    expect(book.timedOut(at(59))).toEqual([]);
    expect(book.timedOut(at(60))).toEqual([
      { kind: 'TRIAL', number: 0, started: false },
      { kind: 'TRIAL', number: 1, started: false },
    ]);
    const first = book.expire('TRIAL', 0, at(60));
    expect(recorded(first).map((j) => [j.number, j.attempt])).toEqual([[0, 2]]);
    // trial 1 is untouched until its own transition
    expect(book.running().map((j) => [j.number, j.attempt])).toEqual([
      [0, 2],
      [1, 1],
    ]);
    expect(book.expire('TRIAL', 0, at(61)).effects).toEqual([]); // attempt 2 has its own clock
  });

  it('trial book - the clock runs from the start on a worker; a proposal seen waiting in the queue is not timed out', () => {
    const book = bookWith(2);
    book.published('TRIAL', 0, 1, 7);
    book.published('TRIAL', 1, 1, 8);
    // trial 0 starts late (it waited behind others): its clock starts then
    book.started('TRIAL', 0, 1, 'w1', at(50));
    expect(book.timedOut(at(60))).toEqual([{ kind: 'TRIAL', number: 1, started: false, seq: 8 }]);
    expect(book.timedOut(at(110))).toContainEqual({ kind: 'TRIAL', number: 0, started: true, seq: 7 });
    // trial 1 is still in the queue at 60 s: waiting, not lost; its clock starts again
    book.waiting('TRIAL', 1, at(60));
    expect(book.expire('TRIAL', 1, at(61)).effects).toEqual([]);
    expect(book.timedOut(at(119)).map((j) => j.number)).toEqual([0]);
    // a started attempt is not put back on the waiting clock
    book.waiting('TRIAL', 0, at(111));
    expect(types(book.expire('TRIAL', 0, at(111)))).toEqual(['withdraw', 'record', 'publish']);
    // gone from the queue and never started: lost, so it is issued again
    expect(recorded(book.expire('TRIAL', 1, at(120)))[0]).toMatchObject({ number: 1, attempt: 2 });
  });

  it('trial book - a restarted coordinator gives every running attempt a full timeout from its start', () => {
    const book = bookWith(1);
    book.started('TRIAL', 0, 1, 'w1', at(1));
    const records = book.running().map((j) => structuredClone(j));
    const resumed = TrialBook.restore(settings(), records, [], 'running', at(300));
    expect(resumed.timedOut(at(359))).toEqual([]);
    expect(resumed.timedOut(at(360))).toEqual([{ kind: 'TRIAL', number: 0, started: true }]);
  });

  it('trial book - a timeout issues the trial again, withdrawing the old proposal; after maxAttempts it fails', () => {
    const book = bookWith(1);
    book.published('TRIAL', 0, 1, 9);
    expect(expireAll(book, at(59)).effects).toEqual([]);
    const t = expireAll(book, at(60));
    expect(types(t)).toEqual(['withdraw', 'record', 'publish']);
    expect(t.effects[0]).toEqual({ type: 'withdraw', seq: 9 });
    const job = recorded(t)[0]!;
    expect(job.attempt).toBe(2);
    expect(job.attempts.map((a) => a.outcome)).toEqual(['superseded', undefined]);
    expect(t.events[0]).toMatchObject({ type: 'trial.reissued', reason: 'timeout', attempt: 2 });
    // the second attempt's clock starts at its own issue time
    expect(expireAll(book, at(119)).effects).toEqual([]);
    book.published('TRIAL', 0, 2, 10);
    const last = expireAll(book, at(120));
    // failed: recorded, and its proposal withdrawn so no lease hands it to another worker
    expect(types(last)).toEqual(['record', 'withdraw']);
    expect(recorded(last)[0]).toMatchObject({ state: 'failed', error: { code: 'TIMEOUT', message: 'no result after 2 attempts of 60 s' } });
    expect(events(last)).toEqual(['trial.failed']);
  });

  it('trial book - a retryable error issues the trial again until maxAttempts; a permanent one fails it at once', () => {
    const book = bookWith(2);
    book.published('TRIAL', 0, 1, 5);
    const transient = { code: 'TRANSPORT', message: 'seeder down', retryable: true };
    const t = book.onResult(result(0, { error: transient, scores: [] }), at(1));
    expect(t.disposition).toBe('reissued');
    expect(types(t)).toEqual(['withdraw', 'record', 'publish']);
    expect(recorded(t)[0]!.attempts[0]).toMatchObject({ outcome: 'error', error: transient, worker: 'w1' });
    expect(t.events[0]).toMatchObject({ type: 'trial.reissued', reason: 'error', worker: 'w1', error: { code: 'TRANSPORT' } });
    const second = book.onResult(result(0, { attempt: 2, error: transient, scores: [] }), at(2));
    expect(second.disposition).toBe('failed'); // maxAttempts = 2
    expect(recorded(second)[0]).toMatchObject({ state: 'failed', error: { code: 'TRANSPORT', message: 'seeder down' } });

    const permanent = book.onResult(
      result(1, { error: { code: 'BAD_POOL', message: 'corrupt shard', retryable: false }, scores: [] }),
      at(3),
    );
    expect(permanent.disposition).toBe('failed');
    expect(types(permanent)).toEqual(['record']);
    expect(permanent.events[0]).toMatchObject({ type: 'trial.failed', error: { code: 'BAD_POOL', message: 'corrupt shard' } });
    // failed trials are shown to the sampler as failed, without a value
    expect(book.samplerView().map((v) => v.state)).toEqual(['failed', 'failed']);
  });

  it('trial book - a non-finite objective or a wrong score list fails the trial', () => {
    const book = bookWith(2);
    const nan = book.onResult(
      result(0, {
        scores: [
          { name: 'a', score: Number.NaN, tokens: 1 },
          { name: 'b', score: 1, tokens: 1 },
        ],
      }),
      T0,
    );
    expect(recorded(nan)[0]).toMatchObject({
      state: 'failed',
      error: { code: 'BAD_SCORE', message: 'the objective is not a finite number' },
    });
    const wrong = book.onResult(result(1, { scores: [{ name: 'a', score: 1, tokens: 1 }] }), T0);
    expect(recorded(wrong)[0]).toMatchObject({ state: 'failed', error: { code: 'BAD_SCORE', message: 'scores for [a], expected [a,b]' } });
  });

  it('trial book - a worker starting the current attempt is recorded once per worker', () => {
    const book = bookWith(1);
    const t = book.started('TRIAL', 0, 1, 'w1', at(1));
    expect(recorded(t)[0]!.attempts[0]).toMatchObject({ worker: 'w1', startedAt: at(1).toISOString() });
    expect(t.events).toEqual([{ type: 'trial.started', study: 's', kind: 'TRIAL', trial: 0, attempt: 1, label: 'base', worker: 'w1' }]);
    expect(book.started('TRIAL', 0, 1, 'w1', at(2)).effects).toEqual([]);
    expect(events(book.started('TRIAL', 0, 1, 'w2', at(3)))).toEqual(['trial.started']); // redelivered elsewhere
    expect(book.started('TRIAL', 0, 2, 'w1', at(4)).effects).toEqual([]); // not the current attempt
  });

  it('trial book - the budget bounds creation; the study completes once every trial is answered', () => {
    const book = bookWith(3);
    expect(book.wantsTrial).toBe(false);
    expect(() => book.create('tpe', { x: 1 }, T0)).toThrow(/budget of 3 trials is spent/);
    book.onResult(result(0), T0);
    book.onResult(result(1), T0);
    expect(book.advance(T0).effects).toEqual([]);
    expect(book.progress()).toEqual({ finished: 2, total: 3, running: 1, best: 3.5, phase: 'trials' });
    book.onResult(
      result(2, {
        scores: [
          { name: 'a', score: 1, tokens: 1 },
          { name: 'b', score: 1, tokens: 1 },
        ],
      }),
      T0,
    );
    const done = book.advance(T0);
    expect(types(done)).toEqual(['complete']);
    expect(done.events).toEqual([{ type: 'phase', study: 's', phase: 'complete' }]);
    expect(book.phase).toBe('complete');
    expect(book.best()!.number).toBe(2);
    expect(book.advance(T0).effects).toEqual([]);
  });

  it('trial book - the tests phase evaluates the baselines and the best, then completes', () => {
    const book = bookWith(3, { testSets: [{ name: 'a', weight: 1 }] });
    book.onResult(result(0), T0); // 'base', 3.5
    book.onResult(
      result(1, {
        scores: [
          { name: 'a', score: 1, tokens: 1 },
          { name: 'b', score: 1, tokens: 1 },
        ],
      }),
      T0,
    ); // best, 1
    book.onResult(result(2, { error: { code: 'BAD_POOL', message: 'x', retryable: false }, scores: [] }), T0);
    const t = book.advance(T0);
    expect(types(t)).toEqual(['record', 'publish', 'publish']);
    expect(recorded(t).map((j) => [j.kind, j.number, j.label, j.params])).toEqual([
      ['TEST', 0, 'base', { x: 0 }],
      ['TEST', 1, 'best', { x: 0.1 }],
    ]);
    expect(events(t)).toEqual(['phase', 'trial.created', 'trial.created']);
    expect(book.phase).toBe('tests');
    expect(book.progress()).toMatchObject({ finished: 3, total: 5, running: 2 });
    const test = (n: number, score: number) => result(n, { kind: 'TEST', scores: [{ name: 'a', score, tokens: 1 }] });
    expect(book.onResult(test(0, 3), T0).disposition).toBe('recorded');
    expect(book.advance(T0).effects).toEqual([]);
    book.onResult(test(1, 2), T0);
    expect(types(book.advance(T0))).toEqual(['complete']);
  });

  it('trial book - with test sets but no complete trial the study completes instead of re-entering the tests phase', () => {
    const book = bookWith(1, { budget: 1, testSets: [{ name: 'a', weight: 1 }] });
    book.onResult(result(0, { error: { code: 'BAD_POOL', message: 'x', retryable: false }, scores: [] }), T0);
    const t = book.advance(T0);
    expect(types(t)).toEqual(['complete']);
    expect(book.phase).toBe('complete');
  });

  it('trial book - resumed from a record, it knows what runs, and a grown budget reopens a complete study', () => {
    // the records a book wrote, read back: trial 2 is still running and is what gets published again
    const records: JobRecord[] = [];
    const again = TrialBook.restore(settings(), [], []);
    for (let i = 0; i < 3; i++) records.push(...recorded(again.create(i === 0 ? 'base' : 'tpe', { x: i / 10 }, T0)));
    again.onResult(result(0), T0);
    again.onResult(result(1), T0);
    const resumed = TrialBook.restore(settings(), structuredClone(records), []);
    expect(resumed.running().map((j) => j.number)).toEqual([2]);
    expect(resumed.wantsTrial).toBe(false);
    expect(resumed.onResult(result(2), T0).disposition).toBe('recorded');
    expect(types(resumed.advance(T0))).toEqual(['complete']);

    const complete = structuredClone(records).map((j) => ({ ...j, state: 'complete' as const, value: 1 }));
    const grown = TrialBook.restore(settings({ budget: 5 }), complete, [], 'complete');
    expect(grown.phase).toBe('trials');
    expect(grown.wantsTrial).toBe(true);
    expect(grown.nextTrialNumber).toBe(3);
    expect(TrialBook.restore(settings({ budget: 3 }), complete, [], 'complete').phase).toBe('complete');
  });

  it('trial book - the canary: only its trials run until one completes; when they all fail alike the study stops as failed', () => {
    const book = TrialBook.restore(settings({ budget: 10, canary: 2, streak: 3 }), [], []);
    book.create('base', {}, T0);
    expect(book.mayCreateTrial).toBe(true);
    book.create('tpe', { x: 1 }, T0);
    expect(book.mayCreateTrial).toBe(false); // two canary trials out, none complete
    expect(book.wantsTrial).toBe(true);
    const corrupt = { code: 'BAD_POOL', message: 'shard abc: sha256 mismatch', retryable: false };
    const first = book.onResult(result(0, { error: corrupt, scores: [] }), at(1));
    expect(types(first)).toEqual(['record']);
    expect(book.mayCreateTrial).toBe(true); // one canary slot free again
    const second = book.onResult(result(1, { error: corrupt, scores: [] }), at(2));
    expect(types(second)).toEqual(['record', 'fail']);
    expect(second.effects[1]).toMatchObject({ type: 'fail', failure: { code: 'BAD_POOL', message: corrupt.message, trials: [0, 1] } });
    expect(second.events.at(-1)).toMatchObject({ type: 'phase', phase: 'failed' });
    expect(book.phase).toBe('failed');
    expect(book.wantsTrial).toBe(false);
    expect(book.mayCreateTrial).toBe(false);
    expect(types(book.advance(at(3)))).toEqual([]);
    expect(() => book.create('tpe', {}, at(3))).toThrow(/budget/);
  });

  it('trial book - canary trials failing with different errors do not stop the study; once one completes the canary is over', () => {
    const book = TrialBook.restore(settings({ budget: 10, canary: 2, streak: 3 }), [], []);
    book.create('base', {}, T0);
    book.create('tpe', {}, T0);
    book.onResult(result(0, { error: { code: 'RUNTIME', message: 'oom', retryable: false }, scores: [] }), at(1));
    const t = book.onResult(result(1, { error: { code: 'BAD_POOL', message: 'x', retryable: false }, scores: [] }), at(2));
    expect(types(t)).toEqual(['record']);
    expect(book.phase).toBe('trials');
    book.create('tpe', {}, at(3));
    book.onResult(result(2), at(4));
    expect(book.mayCreateTrial).toBe(true);
    for (let i = 3; i < 9; i++) book.create('tpe', {}, at(5));
    expect(book.running()).toHaveLength(6); // no canary limit any more
  });

  it('trial book - a streak of the same error after the canary stops the study; diverged merges neither count nor break it', () => {
    const book = TrialBook.restore(settings({ budget: 20, canary: 1, streak: 3 }), [], []);
    for (let i = 0; i < 7; i++) book.create('tpe', {}, T0);
    book.onResult(result(0), at(1));
    const timeout = { code: 'RUNTIME', message: 'session failed', retryable: false };
    expect(types(book.onResult(result(1, { error: timeout, scores: [] }), at(2)))).toEqual(['record']);
    expect(types(book.onResult(result(2, { error: timeout, scores: [] }), at(3)))).toEqual(['record']);
    // a NaN objective: a property of these weights, skipped by the streak
    const nan = book.onResult(
      result(3, {
        scores: [
          { name: 'a', score: NaN, tokens: 1 },
          { name: 'b', score: 1, tokens: 1 },
        ],
      }),
      at(4),
    );
    expect(nan.disposition).toBe('failed');
    expect(types(nan)).toEqual(['record']);
    // a complete trial resets the streak
    book.onResult(result(4), at(5));
    expect(types(book.onResult(result(5, { error: timeout, scores: [] }), at(6)))).toEqual(['record']);
    expect(book.failureStreak()).toMatchObject({ code: 'RUNTIME', trials: [5] });
    book.onResult(result(6, { error: timeout, scores: [] }), at(7));
    book.create('tpe', {}, at(8));
    const third = book.onResult(result(7, { error: timeout, scores: [] }), at(9));
    expect(third.effects.at(-1)).toMatchObject({ type: 'fail', failure: { code: 'RUNTIME', trials: [5, 6, 7] } });
  });

  it('trial book - streak 0 and canary 0 never stop a study; tests-phase failures do not count', () => {
    const book = TrialBook.restore(settings({ budget: 4, canary: 0, streak: 0 }), [], []);
    for (let i = 0; i < 4; i++) book.create('tpe', {}, T0);
    for (let i = 0; i < 4; i++) {
      const t = book.onResult(result(i, { error: { code: 'BAD_POOL', message: 'x', retryable: false }, scores: [] }), at(i + 1));
      expect(types(t)).toEqual(['record']);
    }
    expect(types(book.advance(at(9)))).toEqual(['complete']);
  });

  it('trial book - resuming a failed study renews the streak trials: same weights, attempts from 1, old runs kept, old results dropped', () => {
    const book = TrialBook.restore(settings({ budget: 5, canary: 2 }), [], []);
    const store = new Map<number, JobRecord>(); // what the coordinator would have written
    const write = (t: Transition) => {
      for (const j of recorded(t)) store.set(j.number, structuredClone(j));
      return t;
    };
    write(book.create('base', { x: 0.5 }, T0));
    write(book.create('tpe', { x: 0.7 }, T0));
    const err = { code: 'TRANSPORT', message: 'no seeder delivered it', retryable: false };
    write(book.onResult(result(0, { error: err, scores: [] }), at(1)));
    const stop = write(book.onResult(result(1, { error: err, scores: [] }), at(2)));
    const failure = stop.effects.flatMap((e) => (e.type === 'fail' ? [e.failure] : []))[0]!;
    expect(failure.trials).toEqual([0, 1]);
    const before = structuredClone(store.get(0)!);

    // the rerun: the record says running again, and the failed trials are renewed
    const resumed = TrialBook.restore(settings({ budget: 5, canary: 2 }), [...store.values()], []);
    expect(resumed.phase).toBe('trials');
    const r = write(resumed.renew(failure.trials, at(10)));
    expect(types(r)).toEqual(['record', 'publish', 'publish']);
    expect(events(r)).toEqual(['trial.reissued', 'trial.reissued']);
    expect(r.events[0]).toMatchObject({ reason: 'resume' });
    const renewed = recorded(r);
    expect(renewed.map((j) => [j.number, j.state, j.attempt, j.params])).toEqual([
      [0, 'running', 1, { x: 0.5 }],
      [1, 'running', 1, { x: 0.7 }],
    ]);
    expect(renewed[0]!.retried).toEqual([
      { attempts: before.attempts, error: before.error, createdAt: before.createdAt, finishedAt: before.finishedAt },
    ]);
    expect(renewed[0]!.error).toBeUndefined();
    expect(renewed[0]!.createdAt).not.toBe(before.createdAt);
    // no trial number was spent on the failed run
    expect(resumed.nextTrialNumber).toBe(2);
    // a late result of the earlier run (its created time) is not taken for the renewed job
    expect(resumed.onResult(result(0, { created: Date.parse(before.createdAt) }), at(11)).disposition).toBe('not-current');
    expect(resumed.onResult(result(0, { created: Date.parse(renewed[0]!.createdAt) }), at(12)).disposition).toBe('recorded');
    // trials running at the stop start over too: a late result of their earlier attempt no longer matches
    const withRunning = TrialBook.restore(settings({ budget: 5, canary: 3 }), [], []);
    for (let i = 0; i < 3; i++) withRunning.create('tpe', { x: i }, T0);
    withRunning.published('TRIAL', 2, 1, 42);
    withRunning.onResult(result(0, { error: err, scores: [] }), at(1));
    withRunning.onResult(result(1, { error: err, scores: [] }), at(2));
    const rr = withRunning.renew([0, 1], at(3));
    expect(types(rr)).toEqual(['withdraw', 'record', 'publish', 'publish', 'publish']);
    expect(recorded(rr).map((j) => [j.number, j.state, j.attempt])).toEqual([
      [0, 'running', 1],
      [1, 'running', 1],
      [2, 'running', 1],
    ]);
    expect(withRunning.onResult(result(2, { created: T0.getTime() }), at(4)).disposition).toBe('not-current');
  });

  it('trial book - a record with a gap in its numbers is refused', () => {
    const a = recorded(TrialBook.restore(settings(), [], []).create('base', {}, T0))[0]!;
    expect(() => TrialBook.restore(settings(), [{ ...a, number: 1 }], [])).toThrow(/record #0 has number 1/);
  });

  it('trial book - proposals kept ahead: as many as asked for less those waiting, never past the budget', () => {
    const book = TrialBook.restore(settings({ budget: 6 }), [], []);
    expect(book.trialsToCreate(4)).toBe(4);
    for (let i = 0; i < 4; i++) book.create('tpe', { x: i }, T0);
    expect(book.unstartedTrials).toBe(4);
    expect(book.trialsToCreate(4)).toBe(0);
    // two taken by workers: two more to keep four waiting, but only two left in the budget
    book.started('TRIAL', 0, 1, 'w1', at(1));
    book.started('TRIAL', 1, 1, 'w2', at(1));
    expect(book.unstartedTrials).toBe(2);
    expect(book.trialsToCreate(4)).toBe(2);
    expect(book.trialsToCreate(40)).toBe(2);
    // JetStream's own count of the queue may say fewer wait than the book thinks (a lost status)
    expect(book.trialsToCreate(4, 0)).toBe(2);
    for (let i = 4; i < 6; i++) book.create('tpe', { x: i }, T0);
    expect(book.trialsToCreate(100, 0)).toBe(0);
    // a reissued attempt waits in the queue again
    book.onResult(result(0, { error: { code: 'TRANSPORT', message: 'x', retryable: true }, scores: [] }), at(2));
    expect(book.unstartedTrials).toBe(5);
  });

  it('trial book - proposals kept ahead never exceed the canary until one of its trials completes', () => {
    const book = TrialBook.restore(settings({ budget: 20, canary: 2, streak: 3 }), [], []);
    expect(book.trialsToCreate(16)).toBe(2);
    book.create('base', {}, T0);
    expect(book.trialsToCreate(16, 0)).toBe(1);
    book.create('tpe', {}, T0);
    expect(book.trialsToCreate(16, 0)).toBe(0);
    book.onResult(result(0, { error: { code: 'RUNTIME', message: 'oom', retryable: false }, scores: [] }), at(1));
    expect(book.trialsToCreate(16, 0)).toBe(1); // one canary slot free
    book.create('tpe', {}, at(1));
    book.onResult(result(1), at(2));
    // the canary passed: the target alone bounds it (two running, one of them unstarted)
    expect(book.unstartedTrials).toBe(1);
    expect(book.trialsToCreate(16)).toBe(15);
  });

  it('trial book - a batch of results is one write, each job once as it stands last; a duplicate in the batch is dropped', () => {
    const book = bookWith(3, { budget: 4 });
    const started = book.started('TRIAL', 0, 1, 'w1', at(1));
    const first = book.onResult(result(0), at(2));
    // the same result again (a redelivery) in the same batch: recorded once
    const again = book.onResult(result(0), at(2));
    const batch = [
      started,
      first,
      again,
      book.onResult(result(1, { error: { code: 'TRANSPORT', message: 'x', retryable: true }, scores: [] }), at(2)),
      book.create('tpe', { x: 9 }, at(2)),
    ];
    expect(again.disposition).toBe('not-current');
    const t = mergeTransitions(batch);
    // one record effect, first; then the actions in their order
    expect(types(t)).toEqual(['record', 'publish', 'publish']);
    expect(recorded(t).map((j) => [j.number, j.state, j.attempt])).toEqual([
      [0, 'complete', 1],
      [1, 'running', 2],
      [3, 'running', 1],
    ]);
    expect(events(t)).toEqual(['trial.started', 'trial.completed', 'trial.reissued', 'trial.created']);
    expect(mergeTransitions([book.onResult(result(0), at(3))])).toEqual({ effects: [], events: [] });
  });
});
