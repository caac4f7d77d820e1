import { execFile } from 'node:child_process';
import { readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import { openLevelStore } from '../coordinator/index.js';
import { flipByte } from './helpers/corrupt.js';
import { buildFamilyPool } from './helpers/family.js';
import { writeStudyConfig } from './helpers/study.js';
import { useTempDir } from './helpers/temp.js';

const family = inject('family');
const cli = inject('cli');
const tmp = useTempDir('fail-fast');

function optimer(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cli, ...args], { timeout: 150_000, cwd: tmp }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe('fail fast', () => {
  it('fail fast - a seeder address workers cannot use is refused before any trial: exit 2, SETUP, naming the address and the flag', async () => {
    const poolDir = join(tmp, 'pool-probe');
    await buildFamilyPool(family, poolDir);
    const storeDir = join(tmp, 'store-probe');
    const config = await writeStudyConfig(join(tmp, 'probe.json'), family, poolDir, { name: 'probe', trials: 4 });
    // a port nothing listens on stands in for a wrong host: what the probe sees is the same
    const r = await optimer(
      'run',
      config,
      '--workers',
      '0',
      '--store',
      storeDir,
      '--advertise-host',
      '127.0.0.2',
      '--grpc-host',
      '127.0.0.1',
      '--json',
    );
    expect(r.code).toBe(2);
    const error = JSON.parse(r.stderr.trim().split('\n').at(-1)!).error;
    expect(error.code).toBe('SETUP');
    expect(error.message).toMatch(
      /^the shard seeder is not reachable at 127\.0\.0\.2:\d+, the address workers are told to use: .*Check --advertise-host/,
    );
    const store = await openLevelStore(join(storeDir, 'db'), { create: false });
    try {
      expect(await store.listJobs('probe', 'TRIAL')).toEqual([]);
    } finally {
      await store.close();
    }
  }, 60_000);

  it('fail fast - a truncated shard in the pool of the coordinator is refused at start: exit 2, BAD_POOL naming the shard', async () => {
    const poolDir = join(tmp, 'pool-truncated');
    await buildFamilyPool(family, poolDir);
    const manifest = JSON.parse(await readFile(join(poolDir, 'manifest.json'), 'utf8'));
    const shard: string = manifest.vectors[1].blob.shards[0].sha256;
    await truncate(join(poolDir, 'shards', shard), 100);
    const config = await writeStudyConfig(join(tmp, 'truncated.json'), family, poolDir, { name: 'truncated', trials: 4 });
    const r = await optimer('run', config, '--workers', '0', '--store', join(tmp, 'store-truncated'), '--json');
    expect(r.code).toBe(2);
    const error = JSON.parse(r.stderr.trim().split('\n').at(-1)!).error;
    expect(error).toMatchObject({ code: 'BAD_POOL' });
    expect(error.message).toBe(`${poolDir}: shard ${shard} has 100 bytes, the manifest says ${manifest.vectors[1].blob.shards[0].bytes}`);
  }, 60_000);

  it('fail fast - an evaluation set the model cannot take is refused at start: exit 2, naming the file, the line and why; no trial recorded', async () => {
    const poolDir = join(tmp, 'pool-sets');
    await buildFamilyPool(family, poolDir);
    const bad = join(tmp, 'beyond-vocab.jsonl');
    await writeFile(bad, '{"input_ids": [1, 2, 3]}\n{"input_ids": [4, 64, 5]}\n');
    const storeDir = join(tmp, 'store-sets');
    const config = await writeStudyConfig(join(tmp, 'sets.json'), family, poolDir, {
      name: 'sets',
      trials: 4,
      objective: {
        sets: [
          { name: 'ja', path: family.dev.ja },
          { name: 'bad', path: bad },
        ],
      },
    });
    const r = await optimer('run', config, '--workers', '0', '--store', storeDir, '--json');
    expect(r.code).toBe(2);
    const error = JSON.parse(r.stderr.trim().split('\n').at(-1)!).error;
    expect(error).toMatchObject({ code: 'BAD_EVAL_SET' });
    expect(error.message).toBe(`${bad}:2: input_ids[1] = 64 is not below the vocabulary size 64`);
    const store = await openLevelStore(join(storeDir, 'db'), { create: false }).catch(() => undefined);
    try {
      expect((await store?.listJobs('sets', 'TRIAL')) ?? []).toEqual([]);
    } finally {
      await store?.close();
    }
  }, 60_000);

  it('fail fast - a corrupt shard fails the canary: the study stops as failed, exit 1, budget unspent; fixed, a rerun resumes and completes', async () => {
    const poolDir = join(tmp, 'pool');
    await buildFamilyPool(family, poolDir);
    const manifest = JSON.parse(await readFile(join(poolDir, 'manifest.json'), 'utf8'));
    const baseShard = join(poolDir, 'shards', manifest.base.blob.shards[0].sha256 as string);
    const storeDir = join(tmp, 'store');
    const config = await writeStudyConfig(join(tmp, 'study.json'), family, poolDir, {
      trials: 12,
      baselines: false,
      lease: { maxAttempts: 2 },
      failFast: { canary: 2, streak: 4 },
    });
    const args = ['run', config, '--workers', '1', '--store', storeDir, '--json'];
    let stoppedWith = 0; // trials created when the study stopped

    // every worker rejects the coordinator's base shard: each trial would fail the same way
    await flipByte(baseShard);
    const failed = await optimer(...args);
    expect(failed.code).toBe(1);
    expect(failed.stdout).toBe('');
    const error = JSON.parse(failed.stderr.trim().split('\n').at(-1)!).error;
    expect(error).toMatchObject({ code: 'STUDY_FAILED', retryable: false });
    expect(error.message).toMatch(
      /^study 'family' stopped: 2 trials \(#0, #1\) failed in a row with TRANSPORT: blob [0-9a-f]{64}: no holder delivered it .*hashing to/,
    );
    expect(error.message).toContain('run the same command again');

    const store = await openLevelStore(join(storeDir, 'db'), { create: false });
    try {
      const study = await store.getStudy('family');
      expect(study).toMatchObject({ state: 'failed', failure: { code: 'TRANSPORT', trials: [0, 1] } });
      const trials = await store.listJobs('family', 'TRIAL');
      // the canary cost its two trials (each with its attempts), and at most one more issued when
      // the first failed (still running when the study stopped), not the budget of twelve
      expect(trials.length).toBeLessThanOrEqual(3);
      expect(trials.slice(0, 2).map((t) => [t.state, t.attempts.length])).toEqual([
        ['failed', 2],
        ['failed', 2],
      ]);
      expect(trials.slice(2).every((t) => t.state === 'running')).toBe(true);
      stoppedWith = trials.length;
    } finally {
      await store.close();
    }
    const status = await optimer('study', 'status', 'family', '--store', storeDir);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/: failed, phase failed /);
    expect(status.stdout).toContain('stopped: trials #0, #1 failed in a row with TRANSPORT: blob ');

    // the cause fixed: the same command resumes, the two failed trials run again, the study completes
    await flipByte(baseShard);
    const resumed = await optimer(...args);
    // (a late result of the first run, for the trial still out when it stopped, may be logged as reissued)
    expect(resumed.stderr).not.toContain('STUDY_FAILED');
    expect(resumed.code).toBe(0);
    const report = JSON.parse(resumed.stdout);
    expect(report.state).toBe('complete');
    const again = await openLevelStore(join(storeDir, 'db'), { create: false });
    try {
      const study = await again.getStudy('family');
      expect(study?.state).toBe('complete');
      expect(study?.failure).toBeUndefined();
      const trials = await again.listJobs('family', 'TRIAL');
      expect(trials).toHaveLength(12);
      expect(trials.map((t) => [t.number, t.state, t.error?.message ?? ''])).toEqual(trials.map((t) => [t.number, 'complete', '']));
      // the failed run is kept as history of trials 0 and 1 (and of a third still running at the
      // stop, started over), not counted against the budget
      expect(trials.filter((t) => t.retried).map((t) => t.number)).toEqual(stoppedWith === 3 ? [0, 1, 2] : [0, 1]);
      expect(trials[0]!.retried![0]!.error?.code).toBe('TRANSPORT');
      expect(trials[0]!.attempts).toHaveLength(1);
    } finally {
      await again.close();
    }
  }, 200_000);
});
