import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { perVectorGenome, type TensorWeighting, uniformWeighting } from '../shared/genome.js';
import type { TensorEntry } from '../shared/pool/manifest.js';
import { Pool } from '../shared/pool/reader.js';
import { loadEvalSets } from '../shared/eval-set.js';
import { evaluateSession } from '../worker/eval/evaluate.js';
import { createMergedSession } from '../worker/eval/session.js';
import { exportMergekit, exportOnnx } from '../worker/merge/export.js';
import { mergeInto, mergeToBuffer as mergeToParts, mergeWeights } from '../worker/merge/merge.js';
import { buildFamilyPool } from './helpers/family.js';
import { useTempDir } from './helpers/temp.js';

const tmp = useTempDir('merge');
const pools: Record<'fp32' | 'fp16', Pool> = {} as never;

beforeAll(async () => {
  await buildFamilyPool(inject('family'), join(tmp, 'fp32'));
  await buildFamilyPool(inject('familyFp16'), join(tmp, 'fp16'));
  pools.fp32 = await Pool.open(join(tmp, 'fp32'));
  pools.fp16 = await Pool.open(join(tmp, 'fp16'));
  return async () => {
    await pools.fp32.close();
    await pools.fp16.close();
  };
});

/** A weighting written out by hand: `weights(t)` per tensor, vectors in whatever order given. */
function byTensor(vectors: string[], weights: (t: TensorEntry) => number[]): TensorWeighting {
  return { vectors, weightsFor: weights };
}

const merged = (pool: Pool) => pool.manifest.tensors.filter((t) => t.merged);
const bytesOf = (buf: Uint8Array, t: TensorEntry) => buf.subarray(t.offset!, t.offset! + t.bytes);
/** The merged parts laid end to end: the whole layout, as one buffer (the pools here have one part). */
const concat = (parts: readonly Uint8Array[]) => new Uint8Array(Buffer.concat(parts));
const mergeToBuffer = async (...a: Parameters<typeof mergeToParts>) => concat(await mergeToParts(...a));
const equalBytes = (a: Uint8Array, b: Uint8Array) => a.length === b.length && Buffer.from(a).equals(Buffer.from(b));

describe('merge through a tensor weighting', () => {
  it('merge - a weight per vector on every tensor merges bit-identically to the per-vector path, whatever the order of the vectors', async () => {
    for (const pool of [pools.fp32, pools.fp16]) {
      const w = { ja: 0.7, zh: -0.3, math: 0.4, code: 1.1 };
      const expected = await mergeToBuffer(pool, uniformWeighting(new Map(Object.entries(w))));
      const reversed = ['code', 'math', 'zh', 'ja'] as const;
      const hand = byTensor([...reversed], () => reversed.map((v) => w[v]));
      expect(equalBytes(await mergeToBuffer(pool, hand), expected)).toBe(true);
      const genome = perVectorGenome(['math', 'ja', 'code', 'zh']);
      expect(equalBytes(await mergeToBuffer(pool, genome.weighting(genome.fromVectorWeights(new Map(Object.entries(w))))), expected)).toBe(
        true,
      );
      // a genome over some of the pool's vectors weighs the others 0
      const some = perVectorGenome(['zh', 'code']).weighting({ zh: -0.3, code: 1.1 });
      const zeros = uniformWeighting(
        new Map([
          ['ja', 0],
          ['zh', -0.3],
          ['math', 0],
          ['code', 1.1],
        ]),
      );
      expect(equalBytes(await mergeToBuffer(pool, some), await mergeToBuffer(pool, zeros))).toBe(true);
    }
  });

  it("merge - a weight on one tensor changes only that tensor's bytes, as a uniform merge with that weight would", async () => {
    for (const pool of [pools.fp32, pools.fp16]) {
      const base = await mergeToBuffer(pool, uniformWeighting(new Map()));
      const all = await mergeToBuffer(pool, uniformWeighting(new Map([['math', 0.5]])));
      const target = merged(pool)[1]!;
      const one = await mergeToBuffer(
        pool,
        byTensor(['math'], (t) => [t.name === target.name ? 0.5 : 0]),
      );
      for (const t of merged(pool)) {
        if (t.name === target.name) {
          expect(equalBytes(bytesOf(one, t), bytesOf(base, t)), t.name).toBe(false);
          expect(equalBytes(bytesOf(one, t), bytesOf(all, t)), t.name).toBe(true);
        } else expect(equalBytes(bytesOf(one, t), bytesOf(base, t)), t.name).toBe(true);
      }
    }
  });

  it('merge - each tensor gets its own vectors and weights, reused buffer, streamed, and exported alike', async () => {
    const pool = pools.fp32;
    const plan: ReadonlyMap<string, number>[] = [
      new Map([['ja', 0.5]]),
      new Map([]),
      new Map([
        ['math', -0.3],
        ['zh', 0.2],
        ['code', 0.9],
      ]),
      new Map([
        ['ja', 1],
        ['zh', 1],
        ['math', 1],
        ['code', 1],
      ]),
    ];
    const names = ['ja', 'zh', 'math', 'code'];
    const tensors = merged(pool);
    const pick = (t: TensorEntry) => plan[tensors.findIndex((x) => x.name === t.name) % plan.length]!;
    const weighting = byTensor(names, (t) => names.map((v) => pick(t).get(v) ?? 0));
    const got = await mergeToBuffer(pool, weighting);
    for (const t of tensors) {
      const uniform = await mergeToBuffer(pool, uniformWeighting(pick(t)));
      expect(equalBytes(bytesOf(got, t), bytesOf(uniform, t)), t.name).toBe(true);
    }
    const dest = new Uint8Array(pool.manifest.weightsBytes);
    await mergeInto(pool, uniformWeighting(new Map([['code', 3]])), [dest]); // dirty the reused buffer first
    expect(equalBytes(concat(await mergeInto(pool, weighting, [dest])), got)).toBe(true);
    const streamed = new Uint8Array(pool.manifest.weightsBytes);
    await mergeWeights(pool, weighting, (offset, bytes) => {
      streamed.set(bytes, offset);
    });
    expect(equalBytes(streamed, got)).toBe(true);
    const path = join(tmp, 'per-tensor.onnx');
    await exportOnnx(pool, weighting, path, { externalData: true });
    expect(equalBytes(new Uint8Array(await readFile(`${path}.data`)), got)).toBe(true);
  });

  it('merge - refuses a vector not in the pool, a vector twice, a wrong count of weights and a non-finite weight', async () => {
    const pool = pools.fp32;
    await expect(mergeToBuffer(pool, uniformWeighting(new Map([['fr', 1]])))).rejects.toThrow(/no vector 'fr' in the pool \(it has: /);
    await expect(
      mergeToBuffer(
        pool,
        byTensor(['ja', 'ja'], () => [1, 1]),
      ),
    ).rejects.toThrow("merge: vector 'ja' is weighted twice");
    await expect(
      mergeToBuffer(
        pool,
        byTensor(['ja', 'zh'], () => [1]),
      ),
    ).rejects.toThrow(/merge: 1 weights for tensor '.+', expected one per vector \(2\)/);
    await expect(
      mergeToBuffer(
        pool,
        byTensor(['ja'], () => [Number.NaN]),
      ),
    ).rejects.toThrow(/merge: weight of 'ja' on tensor '.+' is NaN/);
  });

  it("export - mergekit refuses a weighting that weighs a vector differently across tensors; task_arithmetic can't express it", async () => {
    const pool = pools.fp32;
    const [first, second] = merged(pool);
    const out = join(tmp, 'refused.yaml');
    await expect(
      exportMergekit(
        pool,
        byTensor(['ja'], (t) => [t.name === second!.name ? 0.5 : 0.25]),
        out,
      ),
    ).rejects.toThrow(
      `mergekit export: vector 'ja' weighs 0.25 on tensor '${first!.name}' but 0.5 on '${second!.name}'; mergekit's task_arithmetic takes one weight per model (export ONNX instead)`,
    );
    // the same weight on every tensor, written by hand, is a per-model weight
    await exportMergekit(
      pool,
      byTensor(['code', 'ja'], () => [-0.25, 0.4]),
      out,
    );
    expect(await readFile(out, 'utf8')).toMatch(/: ja=0.4, zh=0, math=0, code=-0.25\n/);
  });
});

describe('merge and evaluation, cancelled', () => {
  it('merge - an aborted signal stops a merge and an evaluation before their next step', async () => {
    const pool = pools.fp32;
    const w = uniformWeighting(new Map([['ja', 0.5]]));
    const dest = new Uint8Array(pool.manifest.weightsBytes);
    const aborted = AbortSignal.abort(new Error('worker closing'));
    await expect(mergeInto(pool, w, [dest], aborted)).rejects.toThrow('worker closing');
    expect(dest.every((b) => b === 0)).toBe(true); // stopped before the first tensor
    const merged = await mergeInto(pool, w, [dest], new AbortController().signal);
    const session = await createMergedSession(await pool.graphBytes(), merged, 'cpu');
    try {
      const sets = await loadEvalSets([{ name: 'ja', path: inject('family').dev.ja! }], pool.manifest.model);
      await expect(evaluateSession(session, sets, pool.manifest.model, undefined, aborted)).rejects.toThrow('worker closing');
      const [score] = await evaluateSession(session, sets, pool.manifest.model, undefined, new AbortController().signal);
      expect(Number.isFinite(score!.score)).toBe(true);
    } finally {
      await session.release();
    }
  });
});
