import { describe, expect, it } from 'vitest';
import { Rng } from '../../shared/rng.js';
import { ParzenEstimator, defaultWeights } from '../../coordinator/sampler/parzen.js';
import { clippedNeighborBandwidths, neighborBandwidths } from '../../coordinator/sampler/bandwidth.js';
import { TpeSampler } from '../../coordinator/sampler/tpe.js';
import { argsort } from '../../coordinator/sampler/argsort.js';
import { RandomSampler } from '../../coordinator/sampler/random.js';
import { ndtr, ndtri, logGaussMass, truncnormPpf } from '../../coordinator/sampler/truncnorm.js';
import { parseSpace, type SearchSpace } from '../../coordinator/sampler/space.js';
import type { Sampler, TrialView } from '../../coordinator/sampler/sampler.js';

const dims = [{ kind: 'numeric' as const, t: { low: -1, high: 1, halfStep: undefined, log: false } }];
const sigmasOf = (mus: number[], endpoints: boolean, magic: boolean, minBandwidthFactor = 0.01) =>
  Array.from(
    new ParzenEstimator(
      dims,
      [mus],
      mus.map(() => 1),
      { priorWeight: 1, magicClip: magic, minBandwidthFactor, endpoints, bandwidth: 'neighbor' },
    ).sigmas[0]!,
  );

describe('TPE building blocks', () => {
  it("tpe - neighbour bandwidths match Optuna's golden values", () => {
    expect(sigmasOf([], false, true)).toEqual([2]);
    expect(sigmasOf([0.4], true, false)).toEqual([expect.closeTo(1.4, 12), 2]);
    expect(sigmasOf([-0.3, 0.3], true, false).map((x) => +x.toFixed(12))).toEqual([0.7, 0.7, 2]);
    expect(sigmasOf([-0.3, 0.3], false, false).map((x) => +x.toFixed(12))).toEqual([0.6, 0.6, 2]);
    expect(sigmasOf([-0.4, 0.4, 0.41, 0.42], true, false).map((x) => +x.toFixed(12))).toEqual([0.8, 0.8, 0.01, 0.58, 2]);
    expect(sigmasOf([-0.4, 0.4, 0.41, 0.42], true, true).map((x) => +x.toFixed(12))).toEqual([0.8, 0.8, +(1 / 3).toFixed(12), 0.58, 2]);
    expect(neighborBandwidths([0.5, 0.1], 0, 1, false)).toEqual([expect.closeTo(0.4, 12), expect.closeTo(0.4, 12)]);
  });

  it("tpe - the bandwidth floor is max(range / (K + 1), factor × range): Optuna's with 0.01, 3% by default", () => {
    const mus = Array.from({ length: 60 }, (_, i) => -0.9 + (1.8 * i) / 59); // gaps 0.0305
    const optuna = sigmasOf(mus, false, true, 0.01); // K = 61: floor 2 / 62
    const ours = sigmasOf(mus, false, true, 0.03); // floor 0.06 (2 / 33.3)
    expect(Math.min(...optuna.slice(0, 60))).toBeCloseTo(2 / 62, 12);
    expect(Math.min(...ours.slice(0, 60))).toBeCloseTo(0.06, 12);
    expect(ours[60]).toBe(2); // the prior keeps the whole range
    // a small group never reaches the factor: range / (K + 1) is the larger floor
    expect(sigmasOf([-0.4, 0.4, 0.41, 0.42], true, true, 0.03)[2]).toBeCloseTo(1 / 3, 12);
    expect(new TpeSampler().options.minBandwidthFactor).toBe(0.03);
  });

  it('tpe - the cell method gives the clipped neighbour rule without sorting', () => {
    const rng = new Rng(11);
    let compared = 0;
    for (let trial = 0; trial < 300; trial++) {
      const m = [1, 2, 3, 5, 24, 200, 1000][trial % 7]!;
      const [low, high] = trial % 2 ? [-1, 2] : [Math.log(1e-5), Math.log(0.1)];
      const range = high - low;
      // clustered values with ties (a grid), sometimes on the bounds themselves
      const grid = [3, 50, 0][trial % 3]!;
      const mus = Array.from({ length: m }, () => {
        const u = rng.uniform() < 0.5 ? rng.uniform() : 0.3 + 0.01 * rng.uniform();
        return grid ? low + (Math.round(u * grid) / grid) * range : low + u * range;
      });
      const endpoints = trial % 5 === 0;
      const min = range / Math.min([100, 33.3, 10][trial % 3]!, m + 2);
      const expected = neighborBandwidths(mus, low, high, endpoints).map((s) => Math.min(range, Math.max(min, s)));
      const got = Array.from(clippedNeighborBandwidths(mus, low, high, endpoints, min, range));
      got.forEach((s, i) => {
        expect(s).toBeCloseTo(expected[i]!, 12);
      });
      compared += m;
    }
    expect(compared).toBeGreaterThan(30000);
    // a floor too narrow for cells falls back to the sort
    expect(Array.from(clippedNeighborBandwidths([0.1, 0.5], 0, 1, false, 1e-12, 1))).toEqual([
      expect.closeTo(0.4, 12),
      expect.closeTo(0.4, 12),
    ]);
  });

  it('tpe - argsort orders by value, ties by index, at every size', () => {
    const rng = new Rng(3);
    for (const n of [0, 1, 2, 15, 16, 17, 100, 1000, 1037]) {
      // few distinct values, so ties are everywhere
      const values = Float64Array.from({ length: n }, () => rng.int(n > 20 ? 50 : 3) - 1.5);
      const expected = Array.from({ length: n }, (_, i) => i).sort((a, b) => values[a]! - values[b]! || a - b);
      expect(Array.from(argsort(values))).toEqual(expected);
    }
  });

  it('tpe - default weights ramp up old trials past 25', () => {
    expect(defaultWeights(3)).toEqual([1, 1, 1]);
    const w = defaultWeights(30);
    expect(w.length).toBe(30);
    expect(w[0]).toBeCloseTo(1 / 30, 12);
    expect(w[4]).toBeCloseTo(1, 12);
    expect(w.slice(5)).toEqual(new Array(25).fill(1));
  });

  it('tpe - normal primitives are accurate and inverse of each other', () => {
    // the erfc fit is good to ~1.2e-7 relative, everywhere including the tails
    expect(ndtr(0)).toBeCloseTo(0.5, 6);
    expect(ndtr(1.959963984540054)).toBeCloseTo(0.975, 6);
    expect(ndtr(-5) / 2.866515718791939e-7).toBeCloseTo(1, 6);
    expect(ndtr(-20) / 2.753624118606233e-89).toBeCloseTo(1, 6);
    for (const p of [1e-12, 1e-6, 0.01, 0.3, 0.5, 0.9, 0.999999]) expect(ndtr(ndtri(p)) / p).toBeCloseTo(1, 5);
    expect(logGaussMass(-40, -39)).toBeCloseTo((-1 * (39 * 39)) / 2 - Math.log(39) - 0.5 * Math.log(2 * Math.PI), 2);
    for (const [a, b] of [
      [-1, 1],
      [0, 0.001],
      [5, 8],
      [-8, -5],
    ] as const) {
      for (const q of [0, 0.1, 0.5, 0.9, 1]) {
        const x = truncnormPpf(q, a, b);
        expect(x).toBeGreaterThanOrEqual(a);
        expect(x).toBeLessThanOrEqual(b);
      }
    }
  });
});

const space8: SearchSpace = {
  params: Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`x${i}`, { type: 'float' as const, low: -5, high: 5 }])),
};
const sphere = (p: Record<string, unknown>) => Object.values(p).reduce((a: number, x) => a + ((x as number) - 1) ** 2, 0);

function optimise(sampler: Sampler, space: SearchSpace, f: (p: Record<string, unknown>) => number, n: number, seed: number): number {
  const trials: TrialView[] = [];
  const rng = new Rng(seed);
  let best = Infinity;
  for (let i = 0; i < n; i++) {
    const params = sampler.propose(space, trials, 'minimize', rng);
    const value = f(params);
    best = Math.min(best, value);
    trials.push({ number: i, state: 'complete', params, value });
  }
  return best;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

describe('TPE sampler', () => {
  it('tpe - proposals are inside the bounds, on the grid and of the right type', () => {
    const space = parseSpace(
      {
        params: {
          x: { type: 'float', low: -1, high: 2 },
          lr: { type: 'float', low: 1e-5, high: 1e-1, log: true },
          n: { type: 'int', low: 1, high: 8, step: 1 },
          s: { type: 'float', low: 0, high: 1, step: 0.25 },
          m: { type: 'categorical', choices: ['a', 'b', 'c'] },
        },
      },
      'space',
    );
    const trials: TrialView[] = [];
    const tpe = new TpeSampler();
    const rng = new Rng(3);
    let goodChoice = 0;
    for (let i = 0; i < 60; i++) {
      const p = tpe.propose(space, trials, 'minimize', rng);
      expect(p.x).toBeGreaterThanOrEqual(-1);
      expect(p.x).toBeLessThanOrEqual(2);
      expect(p.lr).toBeGreaterThanOrEqual(1e-5);
      expect(p.lr).toBeLessThanOrEqual(1e-1);
      expect(Number.isInteger(p.n)).toBe(true);
      expect([0, 0.25, 0.5, 0.75, 1]).toContain(p.s);
      const q = p as Record<string, number>;
      expect(['a', 'b', 'c']).toContain(p.m);
      if (i >= 30 && p.m === 'b') goodChoice++;
      trials.push({
        number: i,
        state: 'complete',
        params: p,
        value: (q.x! - 0.5) ** 2 + Math.log10(q.lr!) ** 2 + q.n! + q.s! + (p.m === 'b' ? 0 : 1),
      });
    }
    // the categorical kernel learns which choice is good (random would pick 'b' a third of the time)
    expect(goodChoice).toBeGreaterThan(15);
  });

  it('tpe - the same seed and history give the same proposal', () => {
    const trials: TrialView[] = Array.from({ length: 20 }, (_, i) => {
      const params = Object.fromEntries(Object.keys(space8.params).map((k, j) => [k, Math.sin(i * 7 + j) * 4]));
      return { number: i, state: 'complete' as const, params, value: sphere(params) };
    });
    const a = new TpeSampler().propose(space8, trials, 'minimize', new Rng(11));
    expect(new TpeSampler().propose(space8, trials, 'minimize', new Rng(11))).toEqual(a);
    expect(new TpeSampler().propose(space8, trials, 'minimize', new Rng(12))).not.toEqual(a);
  });

  it('tpe - beats random search on an 8-D sphere at 100 trials over 10 seeds', () => {
    const seeds = Array.from({ length: 10 }, (_, i) => i + 1);
    const tpe = seeds.map((s) => optimise(new TpeSampler(), space8, sphere, 100, s));
    const rnd = seeds.map((s) => optimise(new RandomSampler(), space8, sphere, 100, s));
    expect(median(tpe)).toBeLessThan(0.5 * median(rnd));
  });

  it('tpe - the good group takes the older of tied trials; running trials count only with the liar', () => {
    const space: SearchSpace = { params: { x: { type: 'float', low: 0, high: 1 } } };
    const done = (number: number, x: number, value: number): TrialView => ({ number, state: 'complete', params: { x }, value });
    // trials 0 and 1 tie for best at `older` and `newer`; eight worse ones lie between them
    const history = (older: number, newer: number, sign = 1): TrialView[] => [
      done(0, older, 0),
      done(1, newer, 0),
      ...Array.from({ length: 8 }, (_, i) => done(2 + i, 0.3 + 0.05 * i, sign)),
    ];
    const near = (xs: number[], c: number) => xs.filter((x) => Math.abs(x - c) < 0.15).length;
    const oneGood = new TpeSampler({ gamma: () => 1 }); // the good group is a single trial
    const proposals = (trials: TrialView[], direction: 'minimize' | 'maximize') =>
      Array.from({ length: 100 }, (_, s) => oneGood.propose(space, trials, direction, new Rng(s)).x as number);
    for (const [older, newer] of [
      [0.1, 0.9],
      [0.9, 0.1],
    ] as const) {
      const min = proposals(history(older, newer), 'minimize');
      expect(near(min, older)).toBeGreaterThan(2 * near(min, newer));
      const max = proposals(history(older, newer, -1), 'maximize');
      expect(near(max, older)).toBeGreaterThan(2 * near(max, newer));
    }
    const withRunning = [...history(0.1, 0.9), { number: 10, state: 'running' as const, params: { x: 0.12 } }];
    const unchanged = (sampler: TpeSampler) =>
      Array.from(
        { length: 100 },
        (_, s) =>
          sampler.propose(space, withRunning, 'minimize', new Rng(s)).x ===
          sampler.propose(space, history(0.1, 0.9), 'minimize', new Rng(s)).x,
      ).every(Boolean);
    expect(unchanged(new TpeSampler({ gamma: () => 1, constantLiar: false }))).toBe(true);
    expect(unchanged(oneGood)).toBe(false);
  });

  it('tpe - with 8 trials running, constant liar spreads the running proposals', () => {
    const closest = (liar: boolean, seed: number) => {
      const rng = new Rng(seed);
      const tpe = new TpeSampler({ constantLiar: liar });
      const trials: TrialView[] = [];
      for (let i = 0; i < 30; i++) {
        const params = tpe.propose(space8, trials, 'minimize', rng);
        trials.push({ number: i, state: 'complete', params, value: sphere(params) });
      }
      const running: Record<string, number>[] = [];
      for (let i = 0; i < 8; i++) {
        const params = tpe.propose(space8, trials, 'minimize', rng);
        running.push(params as Record<string, number>);
        trials.push({ number: 30 + i, state: 'running', params });
      }
      let min = Infinity;
      for (let i = 0; i < 8; i++)
        for (let j = 0; j < i; j++)
          min = Math.min(
            min,
            Math.sqrt(sphere(Object.fromEntries(Object.keys(running[i]!).map((k) => [k, running[i]![k]! - running[j]![k]! + 1])))),
          );
      return min;
    };
    const seeds = Array.from({ length: 10 }, (_, i) => i + 100);
    expect(median(seeds.map((s) => closest(true, s)))).toBeGreaterThan(median(seeds.map((s) => closest(false, s))));
  });

  it('tpe - an invalid space is refused naming the parameter', () => {
    expect(() => parseSpace({ params: { w: { type: 'float', low: 2, high: 1 } } }, 'space.json')).toThrow(
      'space.json: params.w: empty range [2, 1]',
    );
    expect(() => parseSpace({ params: { lr: { type: 'float', low: 0, high: 1, log: true } } }, 'space.json')).toThrow(
      'space.json: params.lr: log scale needs low > 0',
    );
    expect(() => parseSpace({ params: { k: { type: 'complex', low: 0, high: 1 } } }, 'space.json')).toThrow(/space\.json: params\.k\.type/);
  });
});
