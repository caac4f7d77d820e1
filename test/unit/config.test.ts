import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadStudyConfig, parseStudyConfig, resolveVectors } from '../../coordinator/study/config.js';
import { createSampler } from '../../coordinator/sampler/create.js';
import { TpeSampler } from '../../coordinator/sampler/tpe.js';
import { findNatsServer } from '../../shared/nats-server.js';
import { useTempDir } from '../helpers/temp.js';

const tmp = useTempDir('config');
const good = {
  name: 'demo-avg4',
  pool: './pool',
  vectors: ['ja', 'zh'],
  bounds: [-1, 2],
  objective: { direction: 'minimize', sets: [{ name: 'ja', path: 'dev-ja.jsonl', test: 'test-ja.jsonl', metric: 'nll', weight: 1 }] },
  trials: 100,
  sampler: { name: 'tpe', seed: 1 },
};
const parse = (edit: (c: Record<string, unknown>) => void) => {
  const c = structuredClone(good) as Record<string, unknown>;
  edit(c);
  return () => parseStudyConfig(c, 'study.yaml', '/work/x');
};

describe('study config', () => {
  it('config - resolves relative paths against the config file and fills defaults', () => {
    const c = parseStudyConfig(good, 'study.yaml', '/work/x');
    expect(c.pool).toBe('/work/x/pool');
    expect(c.objective.sets[0]).toEqual({
      name: 'ja',
      path: '/work/x/dev-ja.jsonl',
      test: '/work/x/test-ja.jsonl',
      metric: 'nll',
      weight: 1,
    });
    expect(c.baselines).toEqual(['base', 'single', 'average']);
    expect(c.lease).toEqual({ ackWaitSeconds: 60, trialTimeoutSeconds: 3600, maxAttempts: 3 });
    expect(resolveVectors(c, ['ja', 'zh', 'math'], 'study.yaml').bounds).toEqual({ ja: [-1, 2], zh: [-1, 2] });
  });

  it('config - a wrong field is refused naming the field and what was expected', () => {
    expect(parse((c) => (c.trails = 10))).toThrow(/study\.yaml: \(top level\): Unrecognized key: "trails"/);
    expect(parse((c) => (c.trials = -3))).toThrow(/study\.yaml: trials: .*(>0|positive|too small)/i);
    expect(parse((c) => (c.name = 'no spaces'))).toThrow("study.yaml: name: expected 1-64 letters, digits, '-' or '_'");
    expect(parse((c) => ((c.objective as { sets: { metric: string }[] }).sets[0]!.metric = 'bleu'))).toThrow(
      /study\.yaml: objective\.sets\[0\]\.metric: .*"nll"/,
    );
    expect(parse((c) => (c.bounds = [2, 1]))).toThrow('study.yaml: bounds: expected [low, high] with low < high');
    expect(parse((c) => (c.sampler = { name: 'cmaes' }))).toThrow(/study\.yaml: sampler\.name/);
    expect(parse((c) => (c.sampler = { name: 'tpe', nEiCandidate: 3 }))).toThrow(/study\.yaml: sampler: Unrecognized key: "nEiCandidate"/);
    const c = parseStudyConfig({ ...good, bounds: { ja: [0, 1], fr: [0, 1] } }, 'study.yaml', '/');
    expect(() => resolveVectors(c, ['ja', 'zh'], 'study.yaml')).toThrow("study.yaml: bounds.fr: not one of the study's vectors (ja, zh)");
    expect(() => resolveVectors(parseStudyConfig({ ...good, vectors: ['ja', 'xx'] }, 's', '/'), ['ja', 'zh'], 's')).toThrow(
      "s: vectors: 'xx' is not in the pool (it has: ja, zh)",
    );
  });

  it("config - gammaFactor sets the size of TPE's good group (Optuna's rule with another factor), checked", () => {
    const split = (sampler: Record<string, unknown>) => {
      const s = createSampler(parseStudyConfig({ ...good, sampler }, 'study.yaml', '/').sampler);
      expect(s).toBeInstanceOf(TpeSampler);
      return [10, 100, 1000].map((n) => (s as TpeSampler).options.gamma(n));
    };
    expect(split({ name: 'tpe' })).toEqual([1, 10, 25]); // Optuna's default_gamma
    expect(split({ name: 'tpe', gammaFactor: 0.15 })).toEqual([2, 15, 25]);
    expect(parse((c) => (c.sampler = { name: 'tpe', gammaFactor: 0 }))).toThrow(
      /study\.yaml: sampler\.gammaFactor: .*(>0|positive|too small)/i,
    );
    expect(parse((c) => (c.sampler = { name: 'tpe', gammaFactor: 1.5 }))).toThrow(/study\.yaml: sampler\.gammaFactor: .*(<=1|too big)/i);
  });

  it('config - YAML syntax errors name the line', async () => {
    const path = join(tmp, 'bad.yaml');
    await writeFile(path, 'name: x\npool: [unclosed\ntrials: 3\n');
    await expect(loadStudyConfig(path)).rejects.toThrow(/bad\.yaml: not valid YAML at line \d+/);
    const ok = join(tmp, 'ok.yaml');
    await writeFile(ok, 'name: y\npool: p\nobjective:\n  sets:\n    - { name: a, path: a.jsonl }\ntrials: 5\n');
    expect((await loadStudyConfig(ok)).objective.sets[0]!.path).toBe(join(tmp, 'a.jsonl'));
  });
});

describe('nats-server discovery', () => {
  it('nats - a missing nats-server gives a message naming how to install it', () => {
    expect(() => findNatsServer({ PATH: '/nonexistent' }, [])).toThrow(
      /nats-server is not installed: install it with 'sudo apt-get install nats-server'/,
    );
    expect(() => findNatsServer({ PATH: '', OPTIMER_NATS_SERVER: '/no/such/nats-server' })).toThrow(
      /OPTIMER_NATS_SERVER=\/no\/such\/nats-server is not an executable file; install it with/,
    );
  });
});
