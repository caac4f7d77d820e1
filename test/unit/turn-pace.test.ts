import { describe, expect, it } from 'vitest';
import { TurnPace } from '../../coordinator/turn-pace.js';
import { queueTarget } from '../../coordinator/worker-tracker.js';

describe('turn pace', () => {
  it('turn pace - nothing is asked ahead before a rate is known', () => {
    const p = new TurnPace();
    expect(p.aheadWanted(0)).toBe(0);
    // the first turn's results came in over a time nobody saw: no rate from them
    p.turn(10, 1000, 1016);
    expect(p.resultsPerSecond(1016)).toBe(0);
    expect(p.aheadWanted(1016)).toBe(0);
  });

  it('turn pace - short trials: the results of two turns are kept ahead', () => {
    const p = new TurnPace();
    // a turn every 16 ms, each 16 ms long, each with 5 results: 312.5 results/s
    for (let i = 0; i < 50; i++) p.turn(5, 1000 + 16 * i, 1016 + 16 * i);
    const last = 1000 + 16 * 49;
    expect(p.resultsPerSecond(last)).toBeCloseTo(312.5, 5);
    // 312.5/s × 16 ms = 5 results a turn, two turns' worth
    expect(p.aheadWanted(last)).toBe(10);
    // no result since: the rate falls, and with it what is kept ahead
    expect(p.aheadWanted(last + 1000)).toBeLessThanOrEqual(4);
    expect(p.aheadWanted(last + 10_000)).toBe(1);
    expect(p.resultsPerSecond(last + 60_000)).toBeLessThan(0.02);
  });

  it('turn pace - long trials ask for at most one ahead, whatever came before', () => {
    const p = new TurnPace();
    for (let i = 0; i < 50; i++) p.turn(5, 1000 + 16 * i, 1016 + 16 * i);
    // then one result a minute, in 20 ms turns: the burst is forgotten within seconds
    for (let i = 1; i <= 5; i++) p.turn(1, 2000 + 60_000 * i, 2020 + 60_000 * i);
    expect(p.resultsPerSecond(2020 + 300_000)).toBeLessThan(0.05);
    expect(p.aheadWanted(2020 + 300_000)).toBe(1);
  });

  it('turn pace - the queue target takes the pace only when it wants more, and never more than one per live worker', () => {
    const o = { minDepth: 1, perWorker: 0.25 };
    expect(queueTarget({ live: 16, idle: 2 }, { ...o, perTurn: 1 })).toBe(2 + 4);
    expect(queueTarget({ live: 16, idle: 2 }, { ...o, perTurn: 10 })).toBe(2 + 10);
    expect(queueTarget({ live: 16, idle: 2 }, { ...o, perTurn: 40 })).toBe(2 + 16);
    expect(queueTarget({ live: 0, idle: 0 }, { ...o, perTurn: 40 })).toBe(1);
  });
});
