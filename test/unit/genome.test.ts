import { describe, expect, it } from 'vitest';
import { baselineMerges, baselineParams } from '../../coordinator/baselines.js';
import { genomeSpace, proposalParams } from '../../coordinator/genome-space.js';
import { perVectorGenome, uniformWeighting } from '../../shared/genome.js';
import type { TensorEntry } from '../../shared/pool/manifest.js';
import { mixtureRatios } from '../../shared/weights.js';

const names = ['ja', 'zh', 'math', 'code'];
const tensor = (name: string): TensorEntry => ({ name, dtype: 'float32', shape: [4], bytes: 16, merged: true, offset: 0 });
const bounds: Record<string, [number, number]> = { ja: [0, 1], zh: [-0.5, 1], math: [0, 2], code: [-1, 1] };

describe('genome', () => {
  it("genome - per-vector: one parameter per vector, named after it, bounded as the study says, in the genome's order", () => {
    const g = perVectorGenome(['math', 'ja']);
    expect(g.kind).toBe('per-vector');
    expect(g.vectors).toEqual(['math', 'ja']);
    expect(g.params(bounds)).toEqual([
      { name: 'math', low: 0, high: 2 },
      { name: 'ja', low: 0, high: 1 },
    ]);
    expect(() => g.params({ ja: [0, 1] })).toThrow("per-vector genome: no bounds for vector 'math'");
    expect(() => perVectorGenome(['ja', 'ja'])).toThrow("per-vector genome: vector 'ja' is given twice");
  });

  it('genome - fromVectorWeights names every vector, 0 for those not weighted, and refuses a vector outside the genome', () => {
    const g = perVectorGenome(names);
    const p = g.fromVectorWeights(new Map([['math', 0.5]]));
    expect(p).toEqual({ ja: 0, zh: 0, math: 0.5, code: 0 });
    expect(Object.keys(p)).toEqual(names);
    expect(g.fromVectorWeights(new Map())).toEqual({ ja: 0, zh: 0, math: 0, code: 0 });
    expect(() => g.fromVectorWeights(new Map([['fr', 1]]))).toThrow(
      "per-vector genome: no vector 'fr' in the genome (it has: ja, zh, math, code)",
    );
  });

  it("genome - weighting gives every tensor each vector's weight; vectors outside the genome are not weighted", () => {
    const g = perVectorGenome(['zh', 'ja']);
    const w = g.weighting({ zh: -0.25, ja: 0.5 });
    expect(w.vectors).toEqual(['zh', 'ja']);
    for (const t of ['E', 'A', 'layers.3.mlp.weight']) expect(w.weightsFor(tensor(t))).toEqual([-0.25, 0.5]);
    expect(w.vectors).not.toContain('math'); // a pool vector the genome does not name: the merge weighs it 0
    const u = uniformWeighting(
      new Map([
        ['code', 1],
        ['ja', 0],
      ]),
    );
    expect(u.vectors).toEqual(['code', 'ja']);
    expect(u.weightsFor(tensor('E'))).toEqual([1, 0]);
    expect(() => uniformWeighting(new Map([['ja', Number.NaN]]))).toThrow("merge weights: weight of 'ja' is NaN, not a finite number");
  });

  it('genome - vectorWeights round-trips fromVectorWeights', () => {
    const g = perVectorGenome(names);
    const w = new Map([
      ['ja', 0.4],
      ['zh', 0],
      ['math', -0.2],
      ['code', 1.5],
    ]);
    expect([...g.vectorWeights(g.fromVectorWeights(w))]).toEqual([...w]);
    const params = { ja: 0.1, zh: 0.2, math: 0.3, code: 0.4 };
    expect(g.fromVectorWeights(g.vectorWeights(params))).toEqual(params);
  });

  it('genome - check refuses unknown and missing names and non-finite values, saying where, with the code asked for', () => {
    const g = perVectorGenome(['ja', 'zh']);
    expect(() => g.check({ ja: 1, zh: 0 }, 'trial 3')).not.toThrow();
    expect(() => g.check({ ja: 1, zh: 0, fr: 1 }, 'trial 3')).toThrow("trial 3: unknown parameter 'fr' (expected: ja, zh)");
    expect(() => g.check({ ja: 1 }, 'trial 3')).toThrow("trial 3: missing parameter 'zh'");
    expect(() => g.check({}, 'trial 3')).toThrow("trial 3: missing parameters 'ja', 'zh'");
    expect(() => g.check({ ja: Number.POSITIVE_INFINITY, zh: 0 }, 'trial 3')).toThrow(
      "trial 3: parameter 'ja' is Infinity, not a finite number",
    );
    expect(() => g.check({ ja: '1', zh: 0 }, 'trial 3')).toThrow("trial 3: parameter 'ja' is 1, not a finite number");
    const code = (f: () => void) => {
      try {
        f();
      } catch (e) {
        return (e as { code?: string }).code;
      }
      return undefined;
    };
    expect(code(() => g.check({ ja: 1 }, 'x'))).toBe('BAD_ARGUMENT');
    expect(code(() => g.check({ ja: 1 }, 'x', 'BAD_MESSAGE'))).toBe('BAD_MESSAGE');
    expect(() => g.weighting({ ja: Number.NaN, zh: 0 })).toThrow("per-vector genome: parameter 'ja' is NaN, not a finite number");
    expect(() => g.vectorWeights({ ja: 1 })).toThrow("per-vector genome: missing parameter 'zh'");
  });

  it('genome - mixture ratios through the genome are as before', () => {
    const g = perVectorGenome(names);
    const params = { ja: 1.5, zh: 0.5, math: -0.3, code: 0 };
    expect(mixtureRatios(g.vectorWeights(params), names)).toEqual({ ja: 0.75, zh: 0.25, math: 'removed', code: 0 });
    expect(mixtureRatios(g.vectorWeights(params), names)).toEqual(mixtureRatios(new Map(Object.entries(params)), names));
  });

  it("genome - the coordinator's space, baselines and proposals through the genome are the per-vector ones, in the same order", () => {
    const vectors = ['math', 'ja', 'code']; // a study's vectors, not in pool order
    const g = perVectorGenome(vectors);
    // what the coordinator built by hand before the genome
    const space = genomeSpace(g, bounds);
    expect(JSON.stringify(space)).toBe(
      JSON.stringify({
        params: Object.fromEntries(vectors.map((v) => [v, { type: 'float' as const, low: bounds[v]![0], high: bounds[v]![1] }])),
      }),
    );
    const baselines = baselineParams(g);
    const old = baselineMerges(vectors).map((b) => ({
      label: b.label,
      params: Object.fromEntries(vectors.map((v) => [v, b.weights.get(v) ?? 0])),
    }));
    expect(JSON.stringify(baselines)).toBe(JSON.stringify(old));
    const proposed = { code: 0.25, ja: -0.5, math: 1 };
    const params = proposalParams(g, space, proposed);
    expect(JSON.stringify(params)).toBe(JSON.stringify(Object.fromEntries(vectors.map((v) => [v, proposed[v as keyof typeof proposed]]))));
    expect(() => proposalParams(g, space, { code: 0.25, ja: 'x', math: 1 })).toThrow("proposal: parameter 'ja' is x, not a number");
  });
});
