import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse } from 'yaml';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { uniformWeighting } from '../shared/genome.js';
import { Pool } from '../shared/pool/reader.js';
import { DEFAULT_FAMILY_SHAPE, loadFamilyParams } from '../shared/family/build.js';
import { referenceNll } from '../shared/family/model.js';
import { readEvalSet } from '../shared/eval-set.js';
import { evaluateMerge, evaluateNll, evaluateSession } from '../worker/eval/evaluate.js';
import { loadEvalSets, type LoadedEvalSet } from '../shared/eval-set.js';
import { createFileSession, createMergedSession } from '../worker/eval/session.js';
import { mergeToBuffer } from '../worker/merge/merge.js';
import { exportMergekit, exportOnnx } from '../worker/merge/export.js';
import { buildFamilyPool, limits, referenceMerge, referenceScores } from './helpers/family.js';
import { useTempDir } from './helpers/temp.js';

const family = inject('family');
const familyFp16 = inject('familyFp16');
const tmp = useTempDir('eval');
let pool: Pool;
let dev: LoadedEvalSet[];

beforeAll(async () => {
  await buildFamilyPool(family, join(tmp, 'pool'));
  pool = await Pool.open(join(tmp, 'pool'));
  dev = await loadEvalSets(
    Object.entries(family.dev).map(([name, path]) => ({ name, path })),
    pool.manifest.model,
  );
  return () => pool.close();
});

/** Scores of a model file loaded directly in ONNX Runtime, without the pool. */
async function fileScores(path: string, sets: LoadedEvalSet[]): Promise<Record<string, number>> {
  const session = await createFileSession(path, 'cpu');
  try {
    return Object.fromEntries((await evaluateSession(session, sets, pool.manifest.model)).map((s) => [s.name, s.score]));
  } finally {
    await session.release();
  }
}

const scoresOf = (r: { scores: { name: string; score: number }[] }) => Object.fromEntries(r.scores.map((s) => [s.name, s.score]));

describe('nll metric', () => {
  it("nll - ONNX Runtime equals the family's own TypeScript forward pass within 1e-4", async () => {
    const weights = { ja: 0.7, zh: -0.3, math: 0.4, code: 1.1 };
    const r = await evaluateMerge(pool, uniformWeighting(new Map(Object.entries(weights))), dev);
    const ref = await referenceScores(family, await referenceMerge(family, weights));
    for (const s of r.scores) expect(Math.abs(s.score - ref[s.name]!)).toBeLessThan(1e-4);
    expect(r.mean).toBeCloseTo(Object.values(ref).reduce((a, b) => a + b) / 4, 4);
  });

  it('nll - does not change with the batch size', async () => {
    const session = await createMergedSession(
      await pool.graphBytes(),
      await mergeToBuffer(pool, uniformWeighting(new Map([['zh', 0.5]]))),
      'cpu',
    );
    try {
      const set = dev[1]!;
      if (set.metric !== 'nll') throw new Error('expected an nll set');
      const seqs = set.items;
      const results = [];
      for (const batchTokens of [1, 64, 300, 1_000_000])
        results.push((await evaluateNll(session, seqs, pool.manifest.model, batchTokens)).nll);
      for (const x of results) expect(Math.abs(x - results[0]!)).toBeLessThan(1e-6);
      expect(results[0]).toBeGreaterThan(1);
    } finally {
      await session.release();
    }
  });

  it('nll - is the token-weighted mean over sequences, not the mean of sequence means', async () => {
    const path = join(tmp, 'two.jsonl');
    await writeFile(path, '{"input_ids": [1, 2]}\n{"input_ids": [3, 4, 5, 6, 7, 8, 9, 10]}\n');
    const [set] = await loadEvalSets([{ name: 'two', path }], limits);
    const base = await loadFamilyParams(family.base);
    const r = await evaluateMerge(pool, uniformWeighting(new Map()), [set!]);
    expect(r.scores[0]!.tokens).toBe(1 + 7);
    expect(r.scores[0]!.score).toBeCloseTo(
      referenceNll(DEFAULT_FAMILY_SHAPE, base, [
        [1, 2],
        [3, 4, 5, 6, 7, 8, 9, 10],
      ]),
      4,
    );
  });
});

describe('eval of a merge', () => {
  it("eval - weights (0,…,0) give the base model's NLL", async () => {
    const r = await evaluateMerge(pool, uniformWeighting(new Map()), dev);
    const direct = await fileScores(family.base, dev);
    for (const s of r.scores) expect(Math.abs(s.score - direct[s.name]!)).toBeLessThan(1e-5);
  });

  it("eval - a one-hot weight gives that checkpoint's NLL, loaded directly from its ONNX file", async () => {
    for (const name of Object.keys(family.checkpoints)) {
      const r = await evaluateMerge(pool, uniformWeighting(new Map([[name, 1]])), dev);
      const direct = await fileScores(family.checkpoints[name]!, dev);
      for (const s of r.scores) expect(Math.abs(s.score - direct[s.name]!)).toBeLessThan(1e-5);
    }
  });

  it('eval - fp16 pools merge in fp32 and give the checkpoint back to fp16 rounding', async () => {
    await buildFamilyPool(familyFp16, join(tmp, 'pool16'));
    const p16 = await Pool.open(join(tmp, 'pool16'));
    try {
      const zero = scoresOf(await evaluateMerge(p16, uniformWeighting(new Map()), dev));
      const baseDirect = await fileScores(familyFp16.base, dev);
      for (const k of Object.keys(zero)) expect(Math.abs(zero[k]! - baseDirect[k]!)).toBeLessThan(1e-5);
      const one = scoresOf(await evaluateMerge(p16, uniformWeighting(new Map([['math', 1]])), dev));
      const ckDirect = await fileScores(familyFp16.checkpoints.math!, dev);
      for (const k of Object.keys(one)) expect(Math.abs(one[k]! - ckDirect[k]!)).toBeLessThan(1e-3);
    } finally {
      await p16.close();
    }
  });

  it("eval - weights the mean by the sets' weights", async () => {
    const sets = await loadEvalSets(
      [
        { name: 'ja', path: family.dev.ja!, weight: 3 },
        { name: 'zh', path: family.dev.zh!, weight: 1 },
      ],
      pool.manifest.model,
    );
    const r = await evaluateMerge(pool, uniformWeighting(new Map([['ja', 0.5]])), sets);
    expect(r.mean).toBeCloseTo((3 * r.scores[0]!.score + r.scores[1]!.score) / 4, 10);
  });
});

describe('evaluation sets', () => {
  const bad = async (content: string) => {
    const path = join(tmp, `bad-${Math.random()}.jsonl`);
    await writeFile(path, content);
    return readEvalSet(path, limits).then(
      () => 'accepted',
      (e: Error) => e.message.replace(path, 'FILE'),
    );
  };

  it('eval set - refuses a bad line naming its number', async () => {
    const good = '{"input_ids": [1, 2, 3]}\n';
    expect(await bad(`${good + good}{"input_ids": [1, 64]}\n`)).toBe('FILE:3: input_ids[1] = 64 is not below the vocabulary size 64');
    expect(await bad(`${good}{"input_ids": [5]}\n`)).toBe('FILE:2: a sequence needs at least 2 tokens, this one has 1');
    expect(await bad(`${good}{"input_ids": [${Array(65).fill(1).join(',')}]}\n`)).toBe(
      "FILE:2: 65 tokens exceed the model's context length of 64",
    );
    expect(await bad(`${good}\n{"input_ids": [1, -2]}\n`)).toBe('FILE:3: input_ids[1] = -2 is not a token id (a non-negative integer)');
    expect(await bad('{"input_ids": [1, 2.5]}\n')).toBe('FILE:1: input_ids[1] = 2.5 is not a token id (a non-negative integer)');
    expect(await bad('{"tokens": [1, 2]}\n')).toBe('FILE:1: "input_ids" must be an array of token ids');
    expect(await bad(`${good}{"input_ids": [1, 2]`)).toMatch(/^FILE:2: not valid JSON/);
    expect(await bad('')).toBe('FILE: no sequences');
    expect(await bad(`${good}\n\n${good}`)).toBe('accepted');
  });
});

describe('export', () => {
  it("export - the exported ONNX model reproduces eval's scores, inline and with external data", async () => {
    const weights = uniformWeighting(
      new Map([
        ['ja', 0.4],
        ['zh', 0.35],
        ['math', -0.2],
        ['code', 0.5],
      ]),
    );
    const expected = scoresOf(await evaluateMerge(pool, weights, dev));
    const inline = join(tmp, 'merged.onnx');
    expect(await exportOnnx(pool, weights, inline)).toEqual([inline]);
    const external = join(tmp, 'merged-ext.onnx');
    expect(await exportOnnx(pool, weights, external, { externalData: true })).toEqual([external, `${external}.data`]);
    for (const path of [inline, external]) {
      const got = await fileScores(path, dev);
      for (const k of Object.keys(expected)) expect(Math.abs(got[k]! - expected[k]!)).toBeLessThan(1e-6);
    }
  });

  it('export - writes a mergekit task_arithmetic config with the same weights', async () => {
    const out = join(tmp, 'merged.yaml');
    await exportMergekit(
      pool,
      uniformWeighting(
        new Map([
          ['ja', 0.4],
          ['code', -0.25],
        ]),
      ),
      out,
      { models: new Map([['ja', 'org/ja-cpt']]), baseModel: 'org/base' },
    );
    const cfg = parse(await readFile(out, 'utf8'));
    expect(cfg).toEqual({
      merge_method: 'task_arithmetic',
      base_model: 'org/base',
      models: [
        { model: 'org/ja-cpt', parameters: { weight: 0.4 } },
        { model: family.checkpoints.code, parameters: { weight: -0.25 } },
      ],
      parameters: { normalize: false },
      dtype: 'float32',
    });
  });
});

describe('model family', () => {
  it('family - the merge landscape is non-trivial: a coarse search beats averaging and every checkpoint', async () => {
    const names = pool.manifest.vectors.map((v) => v.name);
    const mean = async (w: number[]) => (await evaluateMerge(pool, uniformWeighting(new Map(names.map((n, i) => [n, w[i]!]))), dev)).mean;
    const average = await mean(names.map(() => 1 / names.length));
    const singles = await Promise.all(names.map((_, i) => mean(names.map((__, j) => (i === j ? 1 : 0)))));
    // coarse search: a grid over uniform scales, then one pass of coordinate moves
    let best = { w: names.map(() => 0.25), v: average };
    for (const c of [0.3, 0.35, 0.4, 0.5]) {
      const v = await mean(names.map(() => c));
      if (v < best.v) best = { w: names.map(() => c), v };
    }
    for (let j = 0; j < names.length; j++) {
      for (const d of [-0.1, 0.1]) {
        const w = best.w.slice();
        w[j] = w[j]! + d;
        const v = await mean(w);
        if (v < best.v) best = { w, v };
      }
    }
    expect(best.v).toBeLessThan(average - 0.02);
    for (const s of singles) expect(best.v).toBeLessThan(s - 0.2);
    // …and the found weights are not uniform: which vector to trust more is the search's job
    expect(new Set(best.w).size).toBeGreaterThan(1);
    // the held-out test sets agree
    const test = await loadEvalSets(
      Object.entries(family.test).map(([name, path]) => ({ name, path })),
      pool.manifest.model,
    );
    const t = async (w: number[]) => (await evaluateMerge(pool, uniformWeighting(new Map(names.map((n, i) => [n, w[i]!]))), test)).mean;
    expect(await t(best.w)).toBeLessThan(await t(names.map(() => 0.25)));
  });

  it('family - checkpoints come from real training: each is best on its own domain', async () => {
    for (const name of Object.keys(family.checkpoints)) {
      const own = await referenceScores(family, await loadFamilyParams(family.checkpoints[name]!));
      const base = await referenceScores(family, await loadFamilyParams(family.base));
      expect(own[name]).toBeLessThan(base[name]! - 0.5);
      for (const other of Object.keys(own)) if (other !== name) expect(own[other]).toBeGreaterThan(own[name]!);
    }
  });
});
