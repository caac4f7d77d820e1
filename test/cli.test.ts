import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import { useTempDir } from './helpers/temp.js';

const family = inject('family');
const cli = inject('cli');
const tmp = useTempDir('cli');

function optimer(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cli, ...args], { timeout: 120_000, cwd: tmp }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

const vectorArgs = () => Object.entries(family.checkpoints).flatMap(([n, p]) => ['--vector', `${n}=${p}`]);
const setArgs = (split: 'dev' | 'test' = 'dev') => Object.entries(family[split]).flatMap(([n, p]) => ['--set', `${n}=${p}`]);

describe('optimer CLI', () => {
  it('cli - pool build, pool inspect --json and --verify', async () => {
    const out = join(tmp, 'pool');
    const built = await optimer('pool', 'build', '--base', family.base, ...vectorArgs(), '--out', out);
    expect(built.stderr).toBe('');
    expect(built.code).toBe(0);
    expect(built.stdout).toMatch(/cosine similarity/);
    const r = await optimer('pool', 'inspect', out, '--json', '--verify');
    expect(r.code).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s.verified).toBe(true);
    expect(s.vectors.map((v: { name: string }) => v.name)).toEqual(['ja', 'zh', 'math', 'code']);
    expect(s.cosine.matrix.map((row: number[], i: number) => row[i])).toEqual([1, 1, 1, 1].map((x) => expect.closeTo(x, 12)));
    expect(s.parameters).toBe(64 * 16 + 2 * 16 * 48 + 48 + 48 * 64 + 64);
  });

  it('cli - eval --json prints each set, the weights and the weighted mean', async () => {
    await optimer('pool', 'build', '--base', family.base, ...vectorArgs(), '--out', join(tmp, 'p2'));
    const r = await optimer(
      'eval',
      '--pool',
      join(tmp, 'p2'),
      '--weights',
      'ja=0.4,code=0.3',
      ...setArgs(),
      '--set-weight',
      'ja=2',
      '--json',
    );
    expect(r.stderr).toBe('');
    const j = JSON.parse(r.stdout);
    expect(j.weights).toEqual({ ja: 0.4, zh: 0, math: 0, code: 0.3 });
    expect(j.scores.map((s: { name: string }) => s.name)).toEqual(['ja', 'zh', 'math', 'code']);
    const mean = j.scores.reduce((a: number, s: { score: number; weight: number }) => a + s.score * s.weight, 0) / 5;
    expect(j.mean).toBeCloseTo(mean, 10);
    expect(j.weightFeed).toBe('inputs');
    const text = await optimer('eval', '--pool', join(tmp, 'p2'), '--weights', 'ja=0.4,code=0.3', ...setArgs(), '--set-weight', 'ja=2');
    expect(text.stdout).toMatch(new RegExp(`weighted mean nll ${(j.mean as number).toFixed(4)}`));
  });

  it('cli - worker refuses a thread count that is not a positive integer, before connecting', async () => {
    for (const [flag, value] of [
      ['--merge-threads', '0'],
      ['--intra-op-threads', '1.5'],
    ] as const) {
      const r = await optimer('worker', '--nats', 'nats://127.0.0.1:9', '--cache', join(tmp, 'wcache'), flag, value);
      expect(r.code).toBe(2);
      expect(r.stderr).toBe(`optimer: ${flag} '${value}': expected an integer ≥ 1\n`);
    }
  });

  it('cli - bad input exits 2 with a message naming what and where', async () => {
    await optimer('pool', 'build', '--base', family.base, ...vectorArgs(), '--out', join(tmp, 'p3'));
    const bad = join(tmp, 'bad.jsonl');
    await writeFile(bad, '{"input_ids": [1, 2]}\n{"input_ids": [1, 2]}\n{"input_ids": [1, 99]}\n');
    const r = await optimer('eval', '--pool', join(tmp, 'p3'), '--set', `x=${bad}`);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`optimer: ${bad}:3: input_ids[1] = 99 is not below the vocabulary size 64\n`);
    const j = await optimer('eval', '--pool', join(tmp, 'nope'), '--set', `x=${bad}`, '--json');
    expect(j.code).toBe(2);
    expect(JSON.parse(j.stderr).error).toMatchObject({ code: 'BAD_POOL', retryable: false });
    const w = await optimer('eval', '--pool', join(tmp, 'p3'), '--weights', 'fr=1', '--set', `x=${family.dev.ja}`);
    expect(w.stderr).toMatch(/--weights: no vector 'fr' in the pool/);
    const p = await optimer('eval', '--pool', join(tmp, 'p3'), '--provider', 'tpu', '--set', `x=${family.dev.ja}`);
    expect(p.stderr).toMatch(/--provider 'tpu': expected one of cpu, cuda, webgpu/);
    const f = await optimer('eval', '--pool', join(tmp, 'p3'), '--weights-as', 'gpu', '--set', `x=${family.dev.ja}`);
    expect(f.stderr).toBe("optimer: --weights-as 'gpu': expected one of inputs, initializers\n");
    const m = await optimer(
      'pool',
      'build',
      '--base',
      family.base,
      '--vector',
      `ja=${join(tmp, 'missing.onnx')}`,
      '--out',
      join(tmp, 'p4'),
    );
    expect(m.code).toBe(2);
    expect(m.stderr).toMatch(/missing\.onnx: cannot read \(ENOENT\)/);
  });

  it('cli - export writes an ONNX model and a mergekit config', async () => {
    await optimer('pool', 'build', '--base', family.base, ...vectorArgs(), '--out', join(tmp, 'p5'));
    const onnx = await optimer('export', '--pool', join(tmp, 'p5'), '--weights', 'ja=0.5,zh=0.5', '--out', join(tmp, 'm.onnx'), '--json');
    expect(JSON.parse(onnx.stdout)).toEqual({ format: 'onnx', files: [join(tmp, 'm.onnx')] });
    const yaml = await optimer(
      'export',
      '--pool',
      join(tmp, 'p5'),
      '--weights',
      'ja=0.5,zh=-0.1',
      '--out',
      join(tmp, 'm.yaml'),
      '--format',
      'mergekit',
      '--hf',
      'ja=org/ja',
    );
    expect(yaml.code).toBe(0);
    const text = await readFile(join(tmp, 'm.yaml'), 'utf8');
    expect(text).toMatch(/merge_method: task_arithmetic/);
    expect(text).toMatch(/model: org\/ja\n\s+parameters:\n\s+weight: 0\.5/);
    expect(text).toMatch(/weight: -0\.1/);
  });

  it('cli - demo runs a TPE study on local workers, beats averaging and exports the best merge', async () => {
    const r = await optimer('demo', '--out', join(tmp, 'demo'), '--json');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.state).toBe('complete');
    expect(j.trials).toEqual({ budget: 60, created: 60, complete: 60, failed: 0, running: 0 });
    const avg = j.baselines.find((m: { label: string }) => m.label === 'average');
    expect(j.best.objective).toBeLessThan(avg.objective);
    expect(j.best.test.mean).toBeGreaterThan(0);
    expect(j.exported.reloadedDevObjective).toBeCloseTo(j.best.objective, 6);
    expect(Object.keys(j.best.mixture)).toEqual(['ja', 'zh', 'math', 'code']);
    // the record outlives the run
    const best = await optimer('study', 'best', 'demo', '--store', join(tmp, 'demo', 'store'), '--json');
    expect(JSON.parse(best.stdout).best.objective).toBe(j.best.objective);
    const trials = await optimer('study', 'trials', 'demo', '--store', join(tmp, 'demo', 'store'));
    expect(trials.stdout.trim().split('\n')).toHaveLength(61);
  }, 120_000);

  it('cli - run refuses a wrong config field and a missing nats-server with clear messages', async () => {
    const bad = join(tmp, 'bad-study.yaml');
    await writeFile(bad, `name: s\npool: ./p\nobjective:\n  sets: [{ name: a, path: a.jsonl, metrc: nll }]\ntrials: 5\n`);
    const r = await optimer('run', bad, '--store', join(tmp, 'st'));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/bad-study\.yaml: objective\.sets\[0\]: Unrecognized key: "metrc"/);
    await optimer('pool', 'build', '--base', family.base, ...vectorArgs(), '--out', join(tmp, 'p6'));
    const cfg = join(tmp, 'ok-study.yaml');
    await writeFile(cfg, `name: s\npool: ${join(tmp, 'p6')}\nobjective:\n  sets: [{ name: ja, path: ${family.dev.ja} }]\ntrials: 5\n`);
    const missing = await new Promise<{ code: number; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        [cli, 'run', cfg, '--store', join(tmp, 'st2')],
        { env: { ...process.env, OPTIMER_NATS_SERVER: join(tmp, 'no-nats-server') } },
        (err, _out, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stderr }),
      );
    });
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/is not an executable file; install it with 'sudo apt-get install nats-server'/);
  });
});
