import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Level } from 'level';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { withStore } from '../cli/commands/study.js';
import { openLevelStore } from '../coordinator/store/level-store.js';
import { MemoryStudyStore } from '../coordinator/store/memory-store.js';
import type { JobRecord, StudyRecord } from '../coordinator/store/records.js';
import type { StudyStore } from '../coordinator/store/store.js';
import { parseStudyConfig } from '../coordinator/study/config.js';
import { useTempDir } from './helpers/temp.js';

const tmp = useTempDir('store');
let dirs = 0;
const freshPath = (): string => join(tmp, `db-${++dirs}`);

function study(name: string): StudyRecord {
  const config = parseStudyConfig(
    {
      name,
      pool: './pool',
      vectors: ['ja', 'zh'],
      bounds: [-1, 2],
      objective: { direction: 'minimize', sets: [{ name: 'ja', path: 'dev-ja.jsonl', metric: 'nll' }] },
      trials: 20,
    },
    'study.yaml',
    '/work/x',
  );
  const now = '2025-01-01T00:00:00.000Z';
  return {
    name,
    config,
    generation: 1,
    state: 'running',
    vectors: ['ja', 'zh'],
    bounds: { ja: [-1, 2], zh: [-1, 2] },
    createdAt: now,
    updatedAt: now,
  };
}

function job(number: number, kind: JobRecord['kind'] = 'TRIAL', extra: Partial<JobRecord> = {}): JobRecord {
  return {
    kind,
    number,
    label: kind === 'TRIAL' ? 'tpe' : 'best',
    params: { ja: 0.25 * number, zh: 1 - 0.25 * number },
    state: 'running',
    attempt: 1,
    attempts: [{ attempt: 1, issuedAt: '2025-01-01T00:00:01.000Z', seq: 7 + number }],
    createdAt: '2025-01-01T00:00:01.000Z',
    ...extra,
  };
}

const numbers = (jobs: JobRecord[]): number[] => jobs.map((j) => j.number);

const implementations: { name: string; open: () => Promise<StudyStore> }[] = [
  { name: 'LevelDB', open: () => openLevelStore(freshPath()) },
  { name: 'memory', open: async () => new MemoryStudyStore() },
];

describe.each(implementations)('study store ($name)', ({ open }) => {
  let store: StudyStore;
  beforeEach(async () => {
    store = await open();
  });
  afterEach(async () => {
    await store.close();
  });

  it('store - a study and its jobs come back as they were put', async () => {
    const s = study('demo');
    await store.putStudy(s);
    expect(await store.getStudy('demo')).toEqual(s);
    const done = job(3, 'TRIAL', {
      state: 'complete',
      value: 1.25,
      scores: [{ name: 'ja', score: 1.25, tokens: 512 }],
      worker: 'w-1',
      timings: { fetchMs: 1, mergeMs: 2, evalMs: 3 },
      finishedAt: '2025-01-01T00:00:02.000Z',
    });
    await store.putJob('demo', done);
    await store.putJob('demo', job(3, 'TEST'));
    expect(await store.getJob('demo', 'TRIAL', 3)).toEqual(done);
    expect(await store.getJob('demo', 'TEST', 3)).toEqual(job(3, 'TEST'));
    // a put of the same number replaces the record
    await store.putJob('demo', job(3, 'TRIAL', { state: 'failed' }));
    expect((await store.getJob('demo', 'TRIAL', 3))?.state).toBe('failed');
    expect(numbers(await store.listJobs('demo', 'TRIAL'))).toEqual([3]);
  });

  it('store - a missing study or job is undefined, a study with no jobs lists none', async () => {
    expect(await store.getStudy('nope')).toBeUndefined();
    await store.putStudy(study('demo'));
    await store.putJob('demo', job(0));
    expect(await store.getJob('demo', 'TRIAL', 1)).toBeUndefined();
    expect(await store.getJob('demo', 'TEST', 0)).toBeUndefined();
    expect(await store.getJob('nope', 'TRIAL', 0)).toBeUndefined();
    expect(await store.listJobs('nope', 'TRIAL')).toEqual([]);
    expect(await store.listJobs('demo', 'TEST')).toEqual([]);
  });

  it('store - jobs list in number order, per kind and per study', async () => {
    for (const n of [2, 10, 1]) await store.putJob('demo', job(n));
    for (const n of [5, 0]) await store.putJob('demo', job(n, 'TEST'));
    await store.putJob('demo-2', job(4));
    expect(numbers(await store.listJobs('demo', 'TRIAL'))).toEqual([1, 2, 10]);
    expect((await store.listJobs('demo', 'TRIAL')).every((j) => j.kind === 'TRIAL')).toBe(true);
    expect(numbers(await store.listJobs('demo', 'TEST'))).toEqual([0, 5]);
    expect(numbers(await store.listJobs('demo-2', 'TRIAL'))).toEqual([4]);
  });

  it("store - clearJobs removes a study's trials and tests, or only one kind, and nothing of another study", async () => {
    await store.putStudy(study('demo'));
    await store.putJobs('demo', [job(0), job(1), job(0, 'TEST'), job(1, 'TEST')]);
    await store.putJobs('demo-2', [job(0), job(0, 'TEST')]);

    await store.clearJobs('demo', 'TEST');
    expect(await store.listJobs('demo', 'TEST')).toEqual([]);
    expect(numbers(await store.listJobs('demo', 'TRIAL'))).toEqual([0, 1]);

    await store.putJob('demo', job(0, 'TEST'));
    await store.clearJobs('demo');
    expect(await store.listJobs('demo', 'TRIAL')).toEqual([]);
    expect(await store.listJobs('demo', 'TEST')).toEqual([]);
    expect(await store.getStudy('demo')).toEqual(study('demo')); // the study record stays
    expect(numbers(await store.listJobs('demo-2', 'TRIAL'))).toEqual([0]);
    expect(numbers(await store.listJobs('demo-2', 'TEST'))).toEqual([0]);
  });

  it('store - putJobs writes several jobs of both kinds at once', async () => {
    await store.putJobs('demo', [job(2, 'TEST'), job(0, 'TEST'), job(1, 'TEST'), job(7)]);
    expect(await store.listJobs('demo', 'TEST')).toEqual([job(0, 'TEST'), job(1, 'TEST'), job(2, 'TEST')]);
    expect(await store.listJobs('demo', 'TRIAL')).toEqual([job(7)]);
    await store.putJobs('demo', []);
    expect(numbers(await store.listJobs('demo', 'TEST'))).toEqual([0, 1, 2]);
  });

  it('store - listStudies returns every study in name order', async () => {
    expect(await store.listStudies()).toEqual([]);
    for (const n of ['beta', 'alpha', 'Gamma']) await store.putStudy(study(n));
    await store.putJob('alpha', job(0)); // jobs are not studies
    expect((await store.listStudies()).map((s) => s.name)).toEqual(['Gamma', 'alpha', 'beta']);
    await store.putStudy({ ...study('alpha'), generation: 2 });
    expect((await store.listStudies()).map((s) => [s.name, s.generation])).toEqual([
      ['Gamma', 1],
      ['alpha', 2],
      ['beta', 1],
    ]);
  });

  it('store - a record the caller changes, before or after the store has it, stays as stored', async () => {
    const s = study('demo');
    const j = job(1);
    await store.putStudy(s);
    await store.putJob('demo', j);
    await store.putJobs('demo', [job(2)]);
    s.state = 'complete';
    j.attempts.push({ attempt: 2, issuedAt: 'later' });
    j.params.ja = 99;

    const got = (await store.getStudy('demo'))!;
    expect(got.state).toBe('running');
    got.vectors.push('math');
    got.bounds.ja![0] = -9;
    const listedStudy = (await store.listStudies())[0]!;
    listedStudy.generation = 5;
    const gotJob = (await store.getJob('demo', 'TRIAL', 1))!;
    expect(gotJob.attempts).toHaveLength(1);
    expect(gotJob.params.ja).toBe(0.25);
    gotJob.state = 'failed';
    const listed = await store.listJobs('demo', 'TRIAL');
    listed[1]!.attempts[0]!.seq = 0;

    expect(await store.getStudy('demo')).toEqual(study('demo'));
    expect(await store.listJobs('demo', 'TRIAL')).toEqual([job(1), job(2)]);
  });

  it('store - a closed store refuses to be used', async () => {
    await store.close();
    await expect(store.getStudy('demo')).rejects.toThrow();
    await expect(store.putJob('demo', job(0))).rejects.toThrow();
  });
});

/** Writes keys straight into a LevelDB, as another program or an earlier optimer would have. */
async function writeRaw(path: string, entries: Record<string, string>): Promise<void> {
  const db = new Level<string, string>(path, { valueEncoding: 'utf8' });
  await db.open();
  await db.batch(Object.entries(entries).map(([key, value]) => ({ type: 'put' as const, key, value })));
  await db.close();
}

async function readRaw(path: string, key: string): Promise<string | undefined> {
  const db = new Level<string, string>(path, { valueEncoding: 'utf8' });
  await db.open();
  try {
    return await db.get(key);
  } finally {
    await db.close();
  }
}

const jobKey = (study: string, kind: string, n: number) => `job!${study}!${kind}!${String(n).padStart(9, '0')}`;

describe('study store (LevelDB only)', () => {
  it('store - records survive close and reopen, and opening for reading finds them', async () => {
    const path = freshPath();
    const a = await openLevelStore(path);
    await a.putStudy(study('demo'));
    await a.putJobs('demo', [job(10), job(2), job(0, 'TEST')]);
    await a.close();
    const b = await openLevelStore(path, { create: false });
    expect(b.path).toBe(path);
    expect(await b.getStudy('demo')).toEqual(study('demo'));
    expect(await b.listJobs('demo', 'TRIAL')).toEqual([job(2), job(10)]);
    expect(await b.listJobs('demo', 'TEST')).toEqual([job(0, 'TEST')]);
    await b.close();
    expect(JSON.parse((await readRaw(path, 'meta!format'))!)).toEqual({ format: 'optimer-store', version: 1 });
  });

  it('store - a store written in a later format version is refused with what to do, and left as it was', async () => {
    const path = freshPath();
    const future = JSON.stringify({ format: 'optimer-store', version: 2 });
    await writeRaw(path, { 'meta!format': future, 'study!demo': JSON.stringify({ name: 'demo', shape: 'new' }) });
    for (const create of [true, false]) {
      const err = await openLevelStore(path, { create }).catch((e: unknown) => e);
      expect(err).toMatchObject({ name: 'OptimerError', code: 'STORE' });
      const msg = (err as Error).message;
      expect(msg).toContain(path);
      expect(msg).toContain('format version 2');
      expect(msg).toContain('reads format version 1');
      expect(msg).toContain('the optimer that wrote it');
      expect(msg).toContain('a new --store directory');
    }
    expect(await readRaw(path, 'meta!format')).toBe(future);
    // refused, the store was closed again: it can be opened (here, raw) right away
    expect(await readRaw(path, 'study!demo')).toContain('new');
  });

  it('store - a format record that is not the one optimer writes is refused', async () => {
    for (const meta of [
      'not json',
      JSON.stringify({ format: 'other', version: 1 }),
      JSON.stringify({ format: 'optimer-store', version: '1' }),
    ]) {
      const path = freshPath();
      await writeRaw(path, { 'meta!format': meta });
      await expect(openLevelStore(path)).rejects.toMatchObject({
        code: 'STORE',
        message: expect.stringMatching(/meta!format record is not one optimer writes.*reads format version 1/),
      });
      expect(await readRaw(path, 'meta!format')).toBe(meta);
    }
  });

  it('store - a store from before format versions opens as version 1 and is marked so', async () => {
    const path = freshPath();
    // today's layout, JSON values, no meta key
    await writeRaw(path, {
      'study!demo': JSON.stringify(study('demo')),
      [jobKey('demo', 'TRIAL', 1)]: JSON.stringify(job(1)),
      [jobKey('demo', 'TRIAL', 0)]: JSON.stringify(job(0)),
    });
    const store = await openLevelStore(path, { create: false });
    expect(await store.getStudy('demo')).toEqual(study('demo'));
    expect(await store.listJobs('demo', 'TRIAL')).toEqual([job(0), job(1)]);
    await store.close();
    expect(JSON.parse((await readRaw(path, 'meta!format'))!)).toEqual({ format: 'optimer-store', version: 1 });
  });

  it('store - a LevelDB with keys optimer does not write is refused, not written to', async () => {
    const path = freshPath();
    await writeRaw(path, { 'user!1': '{"name":"x"}' });
    await expect(openLevelStore(path)).rejects.toMatchObject({ code: 'STORE', message: expect.stringContaining("key 'user!1'") });
    expect(await readRaw(path, 'meta!format')).toBeUndefined();
  });

  it('store - a corrupt record gives a STORE error naming its key', async () => {
    const path = freshPath();
    const s = await openLevelStore(path);
    await s.putStudy(study('demo'));
    await s.close();
    await writeRaw(path, {
      'study!bad': '[1, 2]',
      [jobKey('demo', 'TRIAL', 0)]: JSON.stringify(job(0)),
      [jobKey('demo', 'TRIAL', 1)]: '{"kind":"TRIAL","number":"one"}',
      [jobKey('demo', 'TEST', 0)]: 'not json',
      [jobKey('demo', 'TEST', 1)]: '{"kind":"EVAL","number":1}',
    });
    const store = await openLevelStore(path);
    try {
      await expect(store.getStudy('bad')).rejects.toMatchObject({ code: 'STORE', message: expect.stringContaining("key 'study!bad'") });
      await expect(store.listStudies()).rejects.toMatchObject({ code: 'STORE', message: expect.stringContaining("key 'study!bad'") });
      expect(await store.getJob('demo', 'TRIAL', 0)).toEqual(job(0));
      await expect(store.listJobs('demo', 'TRIAL')).rejects.toMatchObject({
        code: 'STORE',
        message: expect.stringContaining(`${path}: the value at key '${jobKey('demo', 'TRIAL', 1)}' is not a trial or test record`),
      });
      await expect(store.getJob('demo', 'TEST', 0)).rejects.toMatchObject({
        code: 'STORE',
        message: expect.stringContaining(`key '${jobKey('demo', 'TEST', 0)}'`),
      });
      await expect(store.getJob('demo', 'TEST', 1)).rejects.toMatchObject({
        code: 'STORE',
        message: expect.stringContaining(`key '${jobKey('demo', 'TEST', 1)}'`),
      });
    } finally {
      await store.close();
    }
  });

  it('store - opening for reading where there is no store is NOT_FOUND and creates nothing', async () => {
    const path = join(tmp, 'missing', 'db');
    await expect(openLevelStore(path, { create: false })).rejects.toMatchObject({
      name: 'OptimerError',
      code: 'NOT_FOUND',
      message: `${path}: no study store here (nothing has run with --store <dir>?)`,
    });
    expect(existsSync(join(tmp, 'missing'))).toBe(false);
    // an empty directory is no store either, and stays empty (LevelDB would add a LOCK file)
    const empty = join(tmp, 'empty');
    mkdirSync(empty);
    await expect(openLevelStore(empty, { create: false })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(readdirSync(empty)).toEqual([]);
    // `optimer study status|best|trials` read this way
    const storeDir = join(tmp, 'no-store');
    await expect(withStore(storeDir, async () => 1)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(existsSync(storeDir)).toBe(false);
  });

  it('store - a second open of a store that is open gives the in-use error', async () => {
    const path = freshPath();
    const first = await openLevelStore(path);
    try {
      for (const create of [true, false]) {
        await expect(openLevelStore(path, { create })).rejects.toMatchObject({
          code: 'STORE',
          message: `${path}: the study store is in use by another optimer process (a running coordinator?)`,
        });
      }
      await first.putStudy(study('demo')); // the first is unaffected
      expect(await first.getStudy('demo')).toEqual(study('demo'));
    } finally {
      await first.close();
    }
  });
});
