import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { OptimerError } from '../shared/errors.js';
import { type LoadedEvalSet, loadEvalSets } from '../shared/eval-set.js';
import { uniformWeighting } from '../shared/genome.js';
import { intAttr, node, tensor, valueInfo, writeModel } from '../shared/onnx/build.js';
import { buildPool } from '../shared/pool/build.js';
import { Pool } from '../shared/pool/reader.js';
import { Rng } from '../shared/rng.js';
import { evaluateMerge, evaluateSession } from '../worker/eval/evaluate.js';
import { TrialSessions } from '../worker/eval/trial-session.js';
import { ProviderGraphs } from '../worker/eval/widen.js';
import { buildFamilyPool } from './helpers/family.js';
import { useTempDir } from './helpers/temp.js';

const family = inject('family');
const familyFp16 = inject('familyFp16');
const tmp = useTempDir('trial-session');
let pool32: Pool;
let pool16: Pool;
let dev: LoadedEvalSet[];

beforeAll(async () => {
  await buildFamilyPool(family, join(tmp, 'p32'));
  await buildFamilyPool(familyFp16, join(tmp, 'p16'));
  pool32 = await Pool.open(join(tmp, 'p32'));
  pool16 = await Pool.open(join(tmp, 'p16'));
  dev = await loadEvalSets(
    Object.entries(family.dev).map(([name, path]) => ({ name, path })),
    pool32.manifest.model,
  );
});
afterAll(async () => {
  await pool32?.close();
  await pool16?.close();
});

const WEIGHTINGS: Record<string, number>[] = [{ ja: 0.7, zh: -0.3, math: 0.4, code: 1.1 }, { math: 1 }, {}, { zh: 0.25, code: -0.5 }];
const weighting = (w: Record<string, number>) => uniformWeighting(new Map(Object.entries(w)));
const graphsOf = async (pool: Pool) => new ProviderGraphs(await pool.graphBytes(), pool.manifest.model, 'test graph');

/** Runs each weighting in turn on one TrialSessions; the scores and the session each trial saw. */
async function trials(pool: Pool, ws: Record<string, number>[], weightFeed?: 'inputs' | 'initializers') {
  const sessions = new TrialSessions();
  const graphs = await graphsOf(pool);
  const out: { scores: number[]; session: ort.InferenceSession; feed: string; sessionMs: number }[] = [];
  try {
    for (const w of ws) {
      const r = await sessions.run(pool, graphs, weighting(w), { provider: 'cpu', ...(weightFeed ? { weightFeed } : {}) }, async (s) => ({
        scores: (await evaluateSession(s.session, dev, s.io, undefined, undefined, s.weights)).map((x) => x.score),
        session: s.session,
      }));
      out.push({ ...r.value, feed: r.weightFeed, sessionMs: r.timings.sessionMs });
    }
  } finally {
    await sessions.close();
  }
  return out;
}

describe('weights as graph inputs (TrialSessions)', () => {
  for (const [label, pool] of [
    ['float32', () => pool32],
    ['float16', () => pool16],
  ] as const) {
    it(`trial-session - ${label} pool: one session for every trial, the scores of a session per trial`, async () => {
      const inputs = await trials(pool(), WEIGHTINGS);
      const initializers = await trials(pool(), WEIGHTINGS, 'initializers');
      expect(inputs.map((t) => t.feed)).toEqual(WEIGHTINGS.map(() => 'inputs'));
      expect(initializers.map((t) => t.feed)).toEqual(WEIGHTINGS.map(() => 'initializers'));
      // one session made once, then reused; a session per trial otherwise
      expect(new Set(inputs.map((t) => t.session)).size).toBe(1);
      expect(new Set(initializers.map((t) => t.session)).size).toBe(WEIGHTINGS.length);
      for (const [i, t] of inputs.entries()) {
        // the same weights (a 16-bit merge widened exactly), other float32 kernels: equal to rounding
        for (const [s, score] of t.scores.entries()) expect(Math.abs(score - initializers[i]!.scores[s]!)).toBeLessThan(1e-5);
      }
      // every trial writes all of its weights: the trials differ, and nothing of one stays in the next
      expect(inputs[1]!.scores).not.toEqual(inputs[0]!.scores);
    });
  }

  it('trial-session - a weighting evaluated again after others gives its first scores bit for bit', async () => {
    const [a, , , again] = await trials(pool16, [WEIGHTINGS[0]!, WEIGHTINGS[1]!, WEIGHTINGS[3]!, WEIGHTINGS[0]!]);
    expect(again!.scores).toEqual(a!.scores);
  });

  it('trial-session - another pool gets a session of its own; studies sharing a pool share one', async () => {
    const sessions = new TrialSessions();
    const seen: ort.InferenceSession[] = [];
    const use = async (s: { session: ort.InferenceSession }) => void seen.push(s.session);
    const g32 = await graphsOf(pool32);
    const g16 = await graphsOf(pool16);
    try {
      await sessions.run(pool32, g32, weighting({ ja: 1 }), { provider: 'cpu' }, use);
      // a second Pool object and graphs of the same pool (another study's context): the same session
      const again = await Pool.open(join(tmp, 'p32'));
      try {
        await sessions.run(again, await graphsOf(again), weighting({ zh: 1 }), { provider: 'cpu' }, use);
      } finally {
        await again.close();
      }
      await sessions.run(pool16, g16, weighting({ ja: 1 }), { provider: 'cpu' }, use);
      await sessions.run(pool32, g32, weighting({ ja: 1 }), { provider: 'cpu' }, use);
    } finally {
      await sessions.close();
    }
    expect(seen[1]).toBe(seen[0]);
    expect(seen[2]).not.toBe(seen[0]);
    expect(seen[3]).not.toBe(seen[2]);
  });

  it('trial-session - close() while a trial evaluates: the session serves the trial to its end, then is released', async () => {
    const sessions = new TrialSessions();
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let entered!: () => void;
    const inUse = new Promise<void>((r) => {
      entered = r;
    });
    let session: ort.InferenceSession | undefined;
    const trial = sessions.run(pool16, await graphsOf(pool16), weighting({ ja: 1 }), { provider: 'cpu' }, async (s) => {
      session = s.session;
      entered();
      await gate;
      return (await evaluateSession(s.session, dev, s.io, undefined, undefined, s.weights)).map((x) => x.score);
    });
    await inUse;
    const closed = sessions.close();
    await new Promise((r) => setTimeout(r, 100)); // time enough for a release, were close() to release now
    release();
    const [scores] = await Promise.all([trial, closed]);
    expect(scores.value.every((x) => Number.isFinite(x))).toBe(true);
    expect(scores.weightFeed).toBe('inputs'); // not run again elsewhere after a failure
    // released once the trial ended: ONNX Runtime refuses a released session
    await expect(evaluateSession(session!, dev, pool16.manifest.model)).rejects.toThrow();
  });

  it('trial-session - a first trial failing in ONNX Runtime on the weights-as-inputs session runs again with initializers, and the pool stays there', async () => {
    const sessions = new TrialSessions();
    const g = await graphsOf(pool32);
    const seen: string[] = [];
    // stands for a kernel that takes non-constant weights at creation and fails when run
    const use = async (s: { weights?: unknown }) => {
      seen.push(s.weights ? 'inputs' : 'initializers');
      if (s.weights) throw new OptimerError('RUNTIME', 'ONNX Runtime failed on a batch: boom', { retryable: true });
      return 1;
    };
    try {
      const first = await sessions.run(pool32, g, weighting({ ja: 1 }), { provider: 'cpu' }, use);
      expect(first.weightFeed).toBe('initializers');
      expect(first.note).toMatch(/failed on its first batch with the weights as inputs: .*boom/);
      const second = await sessions.run(pool32, g, weighting({ zh: 1 }), { provider: 'cpu' }, use);
      expect(second.weightFeed).toBe('initializers');
      expect(seen).toEqual(['inputs', 'initializers', 'initializers']);
      // an error that is the trial's own (bad data) is not taken for the graph's: no second run
      const other = new TrialSessions();
      const bad = async () => {
        throw new OptimerError('BAD_EVAL_SET', 'token id 99 is not below the vocabulary size 64');
      };
      await expect(other.run(pool32, g, weighting({ ja: 1 }), { provider: 'cpu' }, bad)).rejects.toThrow(/token id 99/);
      await other.close();
    } finally {
      await sessions.close();
    }
  });

  it('trial-session - evaluateMerge (optimer eval) defaults to inputs on the CPU and says so; initializers when asked', async () => {
    const w = weighting(WEIGHTINGS[0]!);
    const byInputs = await evaluateMerge(pool16, w, dev);
    const byInits = await evaluateMerge(pool16, w, dev, { weightFeed: 'initializers' });
    expect(byInputs.weightFeed).toBe('inputs');
    expect(byInits.weightFeed).toBe('initializers');
    expect(Math.abs(byInputs.mean - byInits.mean)).toBeLessThan(1e-5);
  });

  it('trial-session - a pool with float64 weights (no float32 input can hold them) is evaluated with a session per trial', async () => {
    const dir = join(tmp, 'f64');
    const V = 16;
    const D = 8;
    const lm = async (path: string, seed: number) => {
      const rng = new Rng(seed);
      const e = Float64Array.from({ length: V * D }, () => rng.normal());
      const u = Float32Array.from({ length: D * V }, () => rng.normal() / Math.sqrt(D));
      await writeModel(path, {
        irVersion: 8,
        opsetImport: [{ domain: '', version: 17 }],
        graph: {
          name: 'f64',
          initializer: [tensor('E', 'float64', [V, D], new Uint8Array(e.buffer)), tensor('U', 'float32', [D, V], new Uint8Array(u.buffer))],
          node: [
            node('Gather', ['E', 'input_ids'], ['h64'], [intAttr('axis', 0)]),
            node('Cast', ['h64'], ['h'], [intAttr('to', 1)]),
            node('MatMul', ['h', 'U'], ['logits']),
          ],
          input: [valueInfo('input_ids', 'int64', ['batch', 'seq'])],
          output: [valueInfo('logits', 'float32', ['batch', 'seq', V])],
        },
      });
    };
    await mkdir(dir, { recursive: true });
    await lm(join(dir, 'base.onnx'), 1);
    await lm(join(dir, 'a.onnx'), 2);
    await buildPool({ base: join(dir, 'base.onnx'), vectors: [{ name: 'a', path: join(dir, 'a.onnx') }], out: join(dir, 'pool') });
    const pool = await Pool.open(join(dir, 'pool'));
    try {
      expect(pool.manifest.tensors.find((t) => t.name === 'E')).toMatchObject({ dtype: 'float64' });
      const setPath = join(dir, 'x.jsonl');
      await writeFile(setPath, '{"input_ids": [1, 5, 9, 2, 15]}\n{"input_ids": [3, 3, 7]}\n');
      const sets = await loadEvalSets([{ name: 'x', path: setPath }], { vocab: V, contextLength: null });
      const r = await evaluateMerge(pool, weighting({ a: 0.5 }), sets);
      expect(r.weightFeed).toBe('initializers');
      expect(r.weightFeedNote).toMatch(/float64 weights/);
      expect(Number.isFinite(r.mean)).toBe(true);
    } finally {
      await pool.close();
    }
  });
});
