import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import type { StudyStatus } from '../coordinator/status/status.js';
import { requestStudyStatus } from '../coordinator/status/status-client.js';
import { loadStudyConfig } from '../coordinator/study/config.js';
import { loadEvalSets } from '../shared/eval-set.js';
import { weightedMean } from '../shared/objective.js';
import { Pool } from '../shared/pool/reader.js';
import { createFileSession, evaluateSession } from '../worker/index.js';
import { buildFamilyPool } from './helpers/family.js';
import { useNatsServer } from './helpers/nats.js';
import { exited, outputOf, Processes } from './helpers/study.js';
import { useTempDir } from './helpers/temp.js';
import { waitFor } from './helpers/wait.js';

const family = inject('family');
const cli = inject('cli');
const tmp = useTempDir('operator');
const nats = useNatsServer();
const procs = new Processes();
afterAll(() => procs.stopAll());

function optimer(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cli, ...args], { timeout: 60_000, cwd: tmp }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

const json = async (...args: string[]) => {
  const r = await optimer(...args);
  if (r.code !== 0) throw new Error(`optimer ${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
  return JSON.parse(r.stdout);
};

describe('operating a study', () => {
  it('operator - init writes a config the loader takes; status over NATS is live while the study runs; a locked store is asked over NATS; progress lines without a terminal; pasted best weights and export --best reproduce the score', async () => {
    const poolDir = join(tmp, 'pool');
    await buildFamilyPool(family, poolDir);
    const configPath = join(tmp, 'op.yaml');
    const setArgs = Object.entries(family.dev).flatMap(([n, p]) => ['--set', `${n}=${p}`]);
    const init = await optimer(
      'init',
      poolDir,
      '--out',
      configPath,
      '--name',
      'op',
      '--trials',
      '40',
      ...setArgs,
      '--test',
      `ja=${family.test.ja}`,
    );
    expect(init.code).toBe(0);
    const config = await loadStudyConfig(configPath);
    expect(config).toMatchObject({ name: 'op', trials: 40, sampler: { name: 'tpe' } });
    expect(config.vectors).toEqual(['ja', 'zh', 'math', 'code']);
    expect(config.objective.sets.map((s) => s.name)).toEqual(['ja', 'zh', 'math', 'code']);

    // no workers yet: the coordinator runs, answers status, and says how workers join
    const storeDir = join(tmp, 'store');
    const run = procs.start(cli, ['run', configPath, '--nats', nats.url, '--workers', '0', '--store', storeDir, '--progress-every', '0.2']);
    const early = await waitFor(
      async () =>
        await optimer('study', 'status', 'op', '--nats', nats.url, '--json').then((r) => (r.code === 0 ? JSON.parse(r.stdout) : undefined)),
      30_000,
      'a status reply',
    );
    expect(early.live).toBe(true);
    expect(early.progress).toEqual({ phase: 'trials', done: 0, total: 40 });
    await waitFor(async () => outputOf(run).err.includes(`start workers with: optimer worker --nats ${nats.url}`), 10_000, 'the join hint');

    // the store is locked by the running coordinator: asked over NATS (its coordinator.json note)
    const locked = await optimer('study', 'status', 'op', '--store', storeDir);
    expect(locked.stderr).toBe('');
    expect(locked.stdout).toMatch(
      new RegExp(`^study op \\(live, from the coordinator on ${nats.url.replace(/[.]/g, '\\.')}\\): running, phase trials 0/40`),
    );

    // listed while it runs (asked before any worker joins: a tiny study can finish in seconds)
    const listed = await json('study', 'list', '--nats', nats.url, '--json');
    expect(listed.map((s: { study: string }) => s.study)).toContain('op');

    // asked in-process and every few ms from before the worker starts: with one session per pool a
    // worker runs these 40 trials of the tiny family within a second or two, less than the CLI's
    // start-up takes, so the live status with progress is caught between the first and last result
    let later: StudyStatus | undefined;
    const watching = (async () => {
      const until = Date.now() + 60_000;
      while (!later && Date.now() < until) {
        const s = await requestStudyStatus(nats.url, 'op', {}, { timeoutMs: 1000 }).catch(() => undefined);
        if (s && s.summary.progress.done > 0) later = s;
        else await new Promise((r) => setTimeout(r, 5));
      }
    })();
    procs.startWorkers(cli, nats.url, join(tmp, 'cache'), 1);
    await watching;
    if (!later) throw new Error('no live status with a finished trial while the study ran');
    expect(later.summary.trials.complete).toBeGreaterThan(early.trials.complete);
    expect(later.summary.mesh?.workers).toBe(1);
    expect(later.workers[0]).toMatchObject({ id: 'test-1' });

    expect(await exited(run, 120_000)).toBe(0);
    // not a terminal: plain progress lines came during the run
    expect(outputOf(run).err).toMatch(/optimer: study op: (trials \d+\/40|tests \d+\/\d+), \d+ running, best [\d.-]+, ETA/);
    expect(existsSync(join(storeDir, 'coordinator.json'))).toBe(false);

    // the record: the best weights, pasted into eval, give the recorded objective
    const best = await json('study', 'best', 'op', '--store', storeDir, '--json');
    const text = await optimer('study', 'best', 'op', '--store', storeDir);
    const pasted = /best weights \(--weights\): (\S+)/.exec(text.stdout)![1]!;
    expect(pasted).toBe(best.best.weightsArg);
    const ev = await json('eval', '--pool', poolDir, '--weights', pasted, ...setArgs, '--json');
    expect(ev.mean).toBeCloseTo(best.best.objective, 6);

    // export --best writes that merge; evaluated, it scores the same
    const out = join(tmp, 'best.onnx');
    const ex = await json('export', '--study', 'op', '--best', '--store', storeDir, '--out', out, '--json');
    expect(ex).toMatchObject({ files: [out], trial: best.best.trial, weights: pasted });
    const pool = await Pool.open(poolDir);
    const model = pool.manifest.model;
    await pool.close();
    const dev = await loadEvalSets(
      Object.entries(family.dev).map(([name, path]) => ({ name, path })),
      model,
    );
    const session = await createFileSession(out, 'cpu', model.output);
    const reloaded = weightedMean(await evaluateSession(session, dev, model));
    await session.release();
    expect(reloaded).toBeCloseTo(best.best.objective, 5);
    const trials = await json('study', 'trials', 'op', '--store', storeDir, '--json');
    expect(trials).toHaveLength(40);
    const t3 = await json('export', '--study', 'op', '--trial', '3', '--store', storeDir, '--out', join(tmp, 't3.onnx'), '--json');
    expect(t3.weights).toBe(trials[3].weightsArg);
  }, 240_000);

  it('operator - worker logs are human-readable lines with --log-format pretty and JSON lines with json; a bad format is refused', async () => {
    const lines = async (format: string): Promise<string> => {
      const w = procs.start(cli, [
        'worker',
        '--nats',
        nats.url,
        '--cache',
        join(tmp, `logs-${format}`),
        '--log-level',
        'info',
        '--log-format',
        format,
      ]);
      await waitFor(() => outputOf(w).err.includes('waiting for a coordinator'), 20_000, `the ${format} waiting line`);
      w.kill('SIGTERM');
      await exited(w, 20_000);
      return outputOf(w).err;
    };
    const pretty = await lines('pretty');
    expect(pretty).toMatch(/^\[\d\d:\d\d:\d\d\] INFO \(worker\): waiting for a coordinator/m);
    expect(pretty).not.toMatch(/^\{/m);
    const json = (await lines('json'))
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { msg: string; level: number });
    expect(json.some((l) => l.msg.startsWith('waiting for a coordinator') && l.level === 30)).toBe(true);
    const bad = await optimer('worker', '--nats', nats.url, '--log-format', 'xml');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("log format 'xml': expected one of pretty, json");
  }, 60_000);
});
