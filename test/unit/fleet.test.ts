import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseStudyConfig } from '../../coordinator/study/config.js';
import { silentLogger } from '../../shared/logging.js';
import { type StudyAnnouncement, type WorkerStatus, workerActivity, workerStatusCodec } from '../../shared/index.js';
import { Worker } from '../../worker/index.js';
import { FairShare } from '../../worker/fleet/fair-share.js';
import { whyNotServe } from '../../shared/study-filter.js';
import { Throughput } from '../../worker/fleet/throughput.js';
import { testCapabilities } from '../helpers/capabilities.js';

const caps = testCapabilities;
const ann = (over: Partial<StudyAnnouncement> = {}): StudyAnnouncement => ({
  study: 's',
  direction: 'minimize',
  manifest: { sha256: 'a'.repeat(64), bytes: 1 },
  sets: [],
  seeders: ['x:1'],
  provider: '',
  batchTokens: 1,
  generation: 1,
  ...over,
});
const none = { studies: [], departments: [] };

describe('fair share', () => {
  it('fair share - with priorities 2:1 the split of started trials follows them, not turns', () => {
    const f = new FairShare();
    const studies = [
      { study: 'lo', priority: 1 },
      { study: 'hi', priority: 2 },
    ];
    const got: Record<string, number> = { lo: 0, hi: 0 };
    for (let i = 0; i < 300; i++) {
      const s = f.order(studies)[0]!.study;
      got[s]!++;
      f.observe(`w${i % 3}`, s, `1|TRIAL|${i}|1`);
    }
    expect(got.hi).toBe(200);
    expect(got.lo).toBe(100);
  });

  it('fair share - a study whose pool would push the kept one out of the cache is taken in runs, not every other trial, and still gets its share', () => {
    const f = new FairShare();
    const studies = [
      { study: 'a', priority: 1 },
      { study: 'b', priority: 1 },
    ];
    // one worker whose cache holds one of the two pools: the other displaces it
    let kept = '';
    let switches = 0;
    const got: Record<string, number> = { a: 0, b: 0 };
    for (let i = 0; i < 200; i++) {
      const s = f.order(studies, (c) => kept !== '' && c.study !== kept, 8)[0]!.study;
      if (s !== kept) switches++;
      kept = s;
      got[s]!++;
      f.observe('w', s, `1|TRIAL|${i}|1`);
    }
    // runs of about 16 (8 behind, then 8 ahead): about 200 / 16 switches instead of 200
    expect(switches).toBeLessThanOrEqual(14);
    expect(switches).toBeGreaterThanOrEqual(10);
    expect(Math.abs(got.a! - got.b!)).toBeLessThanOrEqual(17);
    // nothing displaced: turn by turn, as before
    const g = new FairShare();
    let turns = 0;
    let last = '';
    for (let i = 0; i < 20; i++) {
      const s = g.order(studies)[0]!.study;
      if (s !== last) turns++;
      last = s;
      g.observe('w', s, `1|TRIAL|${i}|1`);
    }
    expect(turns).toBe(20);
  });

  it('fair share - 16 workers finishing together, each cache holding one pool: spread margins switch a few workers, one margin switches them all at once and back', () => {
    const studies = [
      { study: 'a', priority: 1 },
      { study: 'b', priority: 1 },
    ];
    const run = (margin: (f: FairShare, id: string) => number) => {
      const workers = Array.from({ length: 16 }, (_, i) => ({ id: `w${i}`, share: new FairShare(), kept: '' }));
      let loads = 0;
      const got: Record<string, number> = { a: 0, b: 0 };
      for (let round = 0; round < 25; round++) {
        // every worker decides on the starts heard before this round (none of the others' in it)
        const picks = workers.map((w) => {
          const s = w.share.order(studies, (c) => w.kept !== '' && c.study !== w.kept, margin(w.share, w.id))[0]!.study;
          if (s !== w.kept) loads++;
          w.kept = s;
          got[s]!++;
          return s;
        });
        for (const w of workers) for (const [i, s] of picks.entries()) w.share.observe(`w${i}`, s, `1|TRIAL|${round}|${i}`);
      }
      return { loads, got };
    };
    const spread = run((f, id) => f.switchMargin(id));
    const one = run(() => 8);
    // 16 first loads, then a few switches; one margin: everyone at once, again and again
    expect(spread.loads).toBeLessThanOrEqual(40);
    expect(one.loads).toBeGreaterThan(150);
    expect(Math.abs(spread.got.a! - spread.got.b!)).toBeLessThanOrEqual(80);
  });

  it('fair share - the switch margin grows with the workers heard lately, spread by name', () => {
    const f = new FairShare();
    f.observe('a', 's', null, 0);
    const one = f.switchMargin('a', 0);
    expect(one).toBeGreaterThanOrEqual(4);
    expect(one).toBeLessThan(12);
    for (let i = 0; i < 20; i++) f.observe(`w${i}`, 's', null, 1000);
    // 21 workers: 42 trials, spread by the name the same way
    expect(f.switchMargin('a', 1000) / one).toBeCloseTo(42 / 8, 6);
    expect(f.switchMargin('b', 1000)).not.toBeCloseTo(f.switchMargin('a', 1000), 3);
    // a minute later, those not heard again are gone (a crashed worker says no goodbye)
    f.observe('a', 's', null, 70_000);
    expect(f.switchMargin('a', 70_000)).toBeCloseTo(one, 6);
  });

  it("fair share - the switch margin counts the study's own trials: a priority-10 study is let in 8 of its trials behind, not 80", () => {
    const f = new FairShare();
    const studies = [
      { study: 'kept', priority: 1 },
      { study: 'big', priority: 10 },
    ];
    f.observe('w', 'kept', '1|TRIAL|0|1');
    f.order(studies); // 'big' starts level with 'kept'
    // 'big' is due 10 trials per trial of 'kept'; 'kept' now runs alone
    let i = 1;
    const next = () => f.order(studies, (c) => c.study === 'big', 8)[0]!.study;
    while (next() === 'kept' && i < 100) f.observe('w', 'kept', `1|TRIAL|${i++}|1`);
    // started: kept i, big 1 (level at the start, counted as kept's share times 10): big is
    // behind by 10·i − 10 of its own trials and goes first once that passes 8
    expect(i).toBe(2);
  });

  it('fair share - a repeated heartbeat counts once; a study seen late starts level, not at zero', () => {
    const f = new FairShare();
    for (let i = 0; i < 50; i++) f.observe('w', 'a', `1|TRIAL|${i}|1`);
    f.observe('w', 'a', '1|TRIAL|49|1');
    f.observe('w', 'a', '1|TRIAL|49|1');
    const order = () =>
      f
        .order([
          { study: 'a', priority: 1 },
          { study: 'b', priority: 1 },
        ])
        .map((c) => c.study);
    expect(order()).toEqual(['a', 'b']); // level: ties keep the given order
    f.observe('w', 'a', '1|TRIAL|50|1');
    expect(order()).toEqual(['b', 'a']);
  });

  it('fair share - what a worker works on is read from its status, checked field by field; a malformed one is null', () => {
    const status = (over: Partial<WorkerStatus>): WorkerStatus => ({
      worker: 'w1',
      state: 'busy',
      provider: 'cpu',
      study: 'nlp-ja',
      generation: 3,
      kind: 'TEST',
      trial: 7,
      attempt: 2,
      heartbeatMs: 2000,
      capabilities: caps(),
      ...over,
    });
    const read = (s: WorkerStatus) => workerActivity(workerStatusCodec.encode(s));
    const busy = read(status({}));
    expect(busy).toEqual({ worker: 'w1', state: 'busy', study: 'nlp-ja', job: '3|TEST|7|2' });
    // the same key as the full decode gives: a heartbeat repeating it counts once
    const full = workerStatusCodec.decode(workerStatusCodec.encode(status({})), 'status');
    expect(busy!.job).toBe(`${full.generation}|${full.kind}|${full.trial}|${full.attempt}`);
    expect(read(status({ state: 'idle', study: '' }))).toEqual({ worker: 'w1', state: 'idle', study: '', job: null });
    expect(read(status({ state: 'stopped', study: '' }))?.state).toBe('stopped');
    expect(read(status({ state: 'asleep' as WorkerStatus['state'] }))).toBeNull();
    expect(read(status({ worker: '' }))).toBeNull();
    expect(read(status({ study: '../etc' }))).toBeNull();
    // busy with no study says nothing of a job (as the full decode reads it)
    expect(read(status({ study: '' }))).toEqual({ worker: 'w1', state: 'busy', study: '', job: null });
    expect(workerActivity(new Uint8Array([0xff, 0xff, 0xff]))).toBeNull();
  });

  it('fair share - an empty or zero priority weighs 1', () => {
    const f = new FairShare();
    f.observe('w', 'a', 'x');
    expect(
      f
        .order([
          { study: 'a', priority: 0 },
          { study: 'b', priority: 1 },
        ])
        .map((c) => c.study),
    ).toEqual(['a', 'b']);
  });
});

describe('study filter', () => {
  it('study filter - requirements: provider and memory, each refusal saying why', () => {
    expect(whyNotServe(ann(), caps(), none)).toBeNull();
    expect(whyNotServe(ann({ requirements: { provider: 'cuda', minMemoryGb: 0 } }), caps(), none)).toMatch(
      /requires provider cuda; this worker has cpu/,
    );
    expect(whyNotServe(ann({ requirements: { provider: 'cuda', minMemoryGb: 0 } }), caps({ provider: 'cuda' }), none)).toBeNull();
    expect(whyNotServe(ann({ requirements: { provider: '', minMemoryGb: 16 } }), caps(), none)).toMatch(
      /requires 16 GB of memory; this worker has 8 GB/,
    );
    expect(whyNotServe(ann({ requirements: { provider: '', minMemoryGb: 8 } }), caps(), none)).toBeNull();
  });

  it('study filter - a worker limited to studies or departments serves only those', () => {
    expect(whyNotServe(ann({ study: 'a' }), caps(), { studies: ['b'], departments: [] })).toMatch(/limited to studies b/);
    expect(whyNotServe(ann({ study: 'b' }), caps(), { studies: ['a', 'b'], departments: [] })).toBeNull();
    expect(whyNotServe(ann({ department: 'nlp' }), caps(), { studies: [], departments: ['vision'] })).toMatch(
      /'nlp'.*limited to departments vision/,
    );
    expect(whyNotServe(ann({ department: '' }), caps(), { studies: [], departments: ['nlp'] })).toMatch(/not set/);
    expect(whyNotServe(ann({ department: 'nlp' }), caps(), { studies: [], departments: ['nlp'] })).toBeNull();
  });
});

describe('throughput', () => {
  it('throughput - trials per minute over busy time, tokens per second over evaluation time, recent trials only', () => {
    const t = new Throughput();
    expect(t.trialsPerMinute).toBe(0);
    t.add(1000, 500, 500);
    t.add(3000, 1500, 1000);
    expect(t.trialsPerMinute).toBeCloseTo(30);
    expect(t.tokensPerSecond).toBeCloseTo(1333.33, 1);
    for (let i = 0; i < 20; i++) t.add(100, 0, 100);
    expect(t.trialsPerMinute).toBeCloseTo(600);
  });
});

describe('fleet config', () => {
  const base = { name: 's', pool: 'p', objective: { sets: [{ name: 'a', path: 'a.jsonl' }] }, trials: 5 };

  it('fleet config - requirements, priority and department are taken, and bad ones named', () => {
    const c = parseStudyConfig(
      { ...base, requirements: { provider: 'cuda', minMemoryGb: 24 }, priority: 2, department: 'nlp' },
      'study.yaml',
      '/',
    );
    expect(c.requirements).toEqual({ provider: 'cuda', minMemoryGb: 24 });
    expect(c.priority).toBe(2);
    expect(c.department).toBe('nlp');
    expect(() => parseStudyConfig({ ...base, requirements: { provider: 'tpu' } }, 'study.yaml', '/')).toThrow(/requirements\.provider/);
    expect(() => parseStudyConfig({ ...base, requirements: { minMemoryGB: 2 } }, 'study.yaml', '/')).toThrow(/minMemoryGB/);
    expect(() => parseStudyConfig({ ...base, priority: 0 }, 'study.yaml', '/')).toThrow(/priority/);
  });

  // where nvidia-smi answers, it is the idle check, and the refusal cannot happen
  const hasNvidiaSmi = spawnSync('nvidia-smi', ['-L']).status === 0;
  it.skipIf(hasNvidiaSmi)(
    'fleet config - an idle-only worker with neither nvidia-smi nor an idle command refuses to start, saying what to give',
    async () => {
      await expect(
        Worker.start({
          natsUrl: 'nats://127.0.0.1:1',
          cacheDir: join(tmpdir(), 'optimer-never-made'),
          log: silentLogger(),
          onlyWhenIdle: true,
        }),
      ).rejects.toThrow(/--only-when-idle: nvidia-smi does not answer here; name an idle check with --idle-command/);
    },
  );
});
