import { describe, expect, it } from 'vitest';
import { makeSources, sampleSequences } from '../../shared/family/corpora.js';
import { initParams, train } from '../../shared/family/train.js';
import { DEFAULT_FAMILY_SHAPE } from '../../shared/family/build.js';
import { referenceNll } from '../../shared/family/model.js';
import { Rng } from '../../shared/rng.js';

const corpora = { vocab: 64, common: 16, domains: ['a', 'b'] };

describe('model family generation', () => {
  it('family - the same seed gives the same corpora and the same trained weights; another seed does not', () => {
    const gen = (seed: number) => {
      const src = makeSources(corpora, seed);
      const rng = new Rng(seed);
      const data = sampleSequences(src.domains[0]!, 64, 20, 4, 16, rng);
      const p = initParams(DEFAULT_FAMILY_SHAPE, rng);
      train(DEFAULT_FAMILY_SHAPE, p, data, { steps: 5, batch: 4, lr: 0.01, seed });
      return { data, E: Array.from(p.E) };
    };
    const a = gen(7);
    expect(gen(7)).toEqual(a);
    const b = gen(8);
    expect(b.data).not.toEqual(a.data);
    expect(b.E).not.toEqual(a.E);
  });

  it('family - training lowers the NLL of the data it trains on', () => {
    const src = makeSources(corpora, 3);
    const rng = new Rng(3);
    const data = sampleSequences(src.general, 64, 60, 8, 32, rng);
    const p = initParams(DEFAULT_FAMILY_SHAPE, rng);
    const before = referenceNll(DEFAULT_FAMILY_SHAPE, p, data);
    train(DEFAULT_FAMILY_SHAPE, p, data, { steps: 60, batch: 8, lr: 0.02, seed: 3 });
    expect(referenceNll(DEFAULT_FAMILY_SHAPE, p, data)).toBeLessThan(before - 0.3);
  });

  it('family - domains prefer their own token band', () => {
    const src = makeSources(corpora, 5);
    const seqs = sampleSequences(src.domains[1]!, 64, 50, 20, 20, new Rng(1));
    const band = seqs.flat().filter((t) => t >= 40 && t < 64).length; // domain b owns tokens 40..63
    const other = seqs.flat().filter((t) => t >= 16 && t < 40).length;
    expect(band).toBeGreaterThan(2 * other);
  });
});
