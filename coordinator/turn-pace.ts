/**
 * How many results come in while the coordinator takes one turn (the proposals it samples, its
 * write, its publishes): the workers that finish in that time find a proposal waiting only if
 * that many were kept ahead. With trials of seconds or minutes it asks for one at most, no more
 * than the depth kept ahead anyway; with trials of milliseconds it is what bounds the throughput
 * (16 workers finishing 300 trials/s against 16 ms turns is about 5 results a turn, more than a
 * quarter of the workers kept ahead).
 */
export class TurnPace {
  /** results and elapsed ms, each decayed with a half-life of `HALF_LIFE_MS`: their ratio is a recent rate */
  private results = 0;
  private elapsedMs = 0;
  private lastStartMs: number | undefined;
  /** the turns' duration, an exponentially weighted mean */
  private turnMs = 0;

  /** One turn, from `startMs` to `endMs`, that handled `results` results. */
  turn(results: number, startMs: number, endMs: number): void {
    // a turn's results came in since the turn before began (the first turn's, over an unknown time)
    if (this.lastStartMs !== undefined) {
      const sinceMs = Math.max(0, startMs - this.lastStartMs);
      const decay = 0.5 ** (sinceMs / HALF_LIFE_MS);
      this.results = this.results * decay + results;
      this.elapsedMs = this.elapsedMs * decay + sinceMs;
    }
    this.lastStartMs = startMs;
    const ms = Math.max(0, endMs - startMs);
    this.turnMs = this.turnMs === 0 ? ms : this.turnMs + TURN_WEIGHT * (ms - this.turnMs);
  }

  /**
   * Results per second lately, at `nowMs` (0 until two turns apart in time were seen): the time
   * since the last turn counts too, so the rate falls while no result comes.
   */
  resultsPerSecond(nowMs: number): number {
    const quietMs = this.lastStartMs === undefined ? 0 : Math.max(0, nowMs - this.lastStartMs);
    const decay = 0.5 ** (quietMs / HALF_LIFE_MS);
    const elapsedMs = this.elapsedMs * decay + quietMs;
    return this.elapsedMs > 0 ? (this.results * decay * 1000) / elapsedMs : 0;
  }

  /**
   * Proposals to keep ahead at `nowMs` so that none of the workers finishing meanwhile waits for
   * a turn: a result waits for the turn under way (half one on average) and then its own, so two
   * turns' worth of results.
   */
  aheadWanted(nowMs: number): number {
    return Math.max(0, Math.ceil((2 * this.resultsPerSecond(nowMs) * this.turnMs) / 1000 - 1e-9)); // not 11 for 10.000000001
  }
}

const HALF_LIFE_MS = 1000;
const TURN_WEIGHT = 0.2;
