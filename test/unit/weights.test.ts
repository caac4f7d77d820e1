import { describe, expect, it } from 'vitest';
import { mixtureRatios, parseWeights } from '../../shared/weights.js';
import { baselineMerges } from '../../coordinator/baselines.js';

const names = ['ja', 'zh', 'math', 'code'];

describe('merge weights', () => {
  it('weights - parse NAME=WEIGHT lists; unnamed vectors weigh 0', () => {
    expect([...parseWeights('ja=0.5, zh=-0.2,code=1e-1', names)]).toEqual([
      ['ja', 0.5],
      ['zh', -0.2],
      ['code', 0.1],
    ]);
    expect(parseWeights('', names).size).toBe(0);
  });

  it('weights - refuse unknown names, repeats and non-numbers, saying which', () => {
    expect(() => parseWeights('fr=1', names)).toThrow("--weights: no vector 'fr' in the pool (it has: ja, zh, math, code)");
    expect(() => parseWeights('ja=1,ja=2', names)).toThrow("--weights: 'ja' is given twice");
    expect(() => parseWeights('ja=abc', names)).toThrow("--weights: weight of 'ja' is 'abc', not a finite number");
    expect(() => parseWeights('ja=Infinity', names)).toThrow(/not a finite number/);
    expect(() => parseWeights('ja', names)).toThrow("--weights: 'ja' is not NAME=WEIGHT");
  });

  it('weights - mixture ratios are over the positive weights; negative ones are removed', () => {
    expect(
      mixtureRatios(
        new Map([
          ['ja', 1.5],
          ['zh', 0.5],
          ['math', -0.3],
        ]),
        names,
      ),
    ).toEqual({ ja: 0.75, zh: 0.25, math: 'removed', code: 0 });
  });

  it('baselines - base, each vector alone, and averaging', () => {
    const b = baselineMerges(names);
    expect(b.map((x) => x.label)).toEqual(['base', 'only:ja', 'only:zh', 'only:math', 'only:code', 'average']);
    expect([...b[5]!.weights.values()]).toEqual([0.25, 0.25, 0.25, 0.25]);
  });
});
