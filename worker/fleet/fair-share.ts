import { createHash } from 'node:crypto';
import { DEFAULT_SWITCH_MARGIN_TRIALS } from '../../shared/index.js';

/**
 * Which study's queue a worker pulls next when several share the pool: the one furthest below
 * its share. Every worker counts the trials started on the whole mesh per study (from the status
 * heartbeats it hears, its own included), so all workers agree, roughly, on who is behind, and the
 * split of trials follows the priorities whatever the number of workers. Taking turns would split
 * them evenly. Pure: the caller feeds it what it hears.
 */
export class FairShare {
  /** trials started per study on the mesh, as heard */
  private readonly started = new Map<string, number>();
  /** what each worker last said it works on, so a repeated heartbeat counts once */
  private readonly lastJob = new Map<string, string>();
  /** when each worker was last heard, ms (a worker that crashed says no goodbye: forgotten after `HEARD_FOR_MS`) */
  private readonly heard = new Map<string, number>();

  /** A worker says what it works on (`job` identifies the attempt; null: nothing). */
  observe(worker: string, study: string, job: string | null, nowMs = Date.now()): void {
    this.heard.set(worker, nowMs);
    if (job === null) {
      this.lastJob.delete(worker);
      return;
    }
    const key = `${study}|${job}`;
    if (this.lastJob.get(worker) === key) return;
    this.lastJob.set(worker, key);
    this.started.set(study, (this.started.get(study) ?? 0) + 1);
  }

  /** A worker is gone: forget what it said (bounded by the workers heard). */
  forget(worker: string): void {
    this.lastJob.delete(worker);
    this.heard.delete(worker);
  }

  /**
   * How many trials behind a study must be before `worker` lets a kept pool go for it: at least
   * `DEFAULT_SWITCH_MARGIN_TRIALS`, two per worker heard, spread from half to one and a half
   * times that by the worker's name. Workers finishing together read the same counts: with one
   * margin they would all switch at once (and back), with margins spread wider than a round of
   * starts only the first few do, and the counts they add hold the others back.
   */
  switchMargin(worker: string, nowMs = Date.now()): number {
    for (const [w, ms] of this.heard) if (nowMs - ms > HEARD_FOR_MS) this.heard.delete(w);
    const spread = createHash('sha256').update(worker).digest().readUInt32BE(0) / 2 ** 32;
    return Math.max(DEFAULT_SWITCH_MARGIN_TRIALS, 2 * this.heard.size) * (0.5 + spread);
  }

  /**
   * The studies in the order to try them: least served relative to priority first (ties: the
   * given order). A study heard of for the first time starts level with the least served of the
   * others, not at zero, or it would take every worker until it caught up with older studies.
   * A study this worker could take only by letting another's pool go (`displaces`) counts as
   * `switchMargin` of its own trials more served: it goes first only once it is that far behind.
   */
  order<T extends { study: string; priority: number }>(
    candidates: readonly T[],
    displaces: (c: T) => boolean = () => false,
    switchMargin = DEFAULT_SWITCH_MARGIN_TRIALS,
  ): T[] {
    const known = candidates.filter((c) => this.started.has(c.study));
    if (known.length < candidates.length) {
      const level = known.length === 0 ? 0 : Math.min(...known.map((c) => this.started.get(c.study)! / weight(c.priority)));
      for (const c of candidates) if (!this.started.has(c.study)) this.started.set(c.study, level * weight(c.priority));
    }
    return candidates
      .map((c, i) => ({ c, i, share: (this.started.get(c.study)! + (displaces(c) ? switchMargin : 0)) / weight(c.priority) }))
      .sort((a, b) => a.share - b.share || a.i - b.i)
      .map((x) => x.c);
  }
}

/** A worker not heard for this long no longer counts among those that may switch (heartbeats come every few seconds). */
const HEARD_FOR_MS = 60_000;

function weight(priority: number): number {
  return priority > 0 ? priority : 1;
}
