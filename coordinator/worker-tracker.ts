import {
  DEFAULT_LOST_AFTER_HEARTBEATS,
  type StudyAnnouncement,
  type WorkerCacheStatus,
  type WorkerCapabilities,
  type WorkerStatus,
  type WorkerTransfer,
  whyNotServe,
} from '../shared/index.js';

/** A worker as the coordinator last heard of it. */
export interface TrackedWorker {
  worker: string;
  provider: string;
  state: WorkerStatus['state'];
  lastSeenMs: number;
  heartbeatMs: number;
  lost: boolean;
  /** when busy: the job it said it works on */
  job: { study: string; kind: WorkerStatus['kind']; trial: number; attempt: number } | null;
  /** what it says it is (null: an older worker that does not say) */
  capabilities: WorkerCapabilities | null;
  /** its cache as it last said (null: an older worker that does not say) */
  cache: WorkerCacheStatus | null;
  /** the transfers under way when it last spoke */
  transfers: WorkerTransfer[];
}

/** The transfers under way across the live workers, summed: what `optimer run`'s progress shows. */
export interface TransferSummary {
  /** workers fetching */
  workers: number;
  bytes: number;
  doneBytes: number;
  bytesPerSecond: number;
}

export type WorkerChange = { type: 'seen'; worker: TrackedWorker } | { type: 'lost'; worker: TrackedWorker; silentMs: number };

/**
 * Which workers of the mesh are alive, from their status messages: one is seen when it first
 * speaks (or speaks again after it was lost), and lost when it says it stopped or stays silent
 * for a few heartbeats. Pure: the caller gives the time.
 */
export class WorkerTracker {
  private readonly workers = new Map<string, TrackedWorker>();

  constructor(private readonly lostAfterHeartbeats = DEFAULT_LOST_AFTER_HEARTBEATS) {}

  heard(s: WorkerStatus, nowMs: number): WorkerChange[] {
    const known = this.workers.get(s.worker);
    const w: TrackedWorker = {
      worker: s.worker,
      provider: s.provider,
      state: s.state,
      lastSeenMs: nowMs,
      heartbeatMs: s.heartbeatMs,
      lost: false,
      job: s.state === 'busy' && s.study ? { study: s.study, kind: s.kind, trial: s.trial, attempt: s.attempt } : null,
      capabilities: s.capabilities ?? known?.capabilities ?? null,
      cache: s.cache ?? known?.cache ?? null,
      transfers: s.transfers ?? [],
    };
    this.workers.set(s.worker, w);
    if (s.state === 'stopped') {
      w.lost = true;
      w.job = null;
      w.transfers = [];
      return known && !known.lost ? [{ type: 'lost', worker: w, silentMs: 0 }] : [];
    }
    return !known || known.lost ? [{ type: 'seen', worker: w }] : [];
  }

  /** Workers silent for too long, each reported once. */
  check(nowMs: number): WorkerChange[] {
    const out: WorkerChange[] = [];
    for (const w of this.workers.values()) {
      const silentMs = nowMs - w.lastSeenMs;
      if (!w.lost && silentMs > this.lostAfterHeartbeats * w.heartbeatMs) {
        w.lost = true;
        out.push({ type: 'lost', worker: w, silentMs });
      }
    }
    return out;
  }

  list(): TrackedWorker[] {
    return [...this.workers.values()];
  }

  /** What the live workers are fetching, as they last said; null when none is. */
  transfers(): TransferSummary | null {
    const sum: TransferSummary = { workers: 0, bytes: 0, doneBytes: 0, bytesPerSecond: 0 };
    for (const w of this.workers.values()) {
      if (w.lost || w.transfers.length === 0) continue;
      sum.workers++;
      for (const t of w.transfers) {
        sum.bytes += t.bytes;
        sum.doneBytes += t.doneBytes;
        sum.bytesPerSecond += t.bytesPerSecond;
      }
    }
    return sum.workers > 0 ? sum : null;
  }

  /**
   * The workers alive now that may take a study's trials (its requirements, their limits, an
   * idle-only worker's GPU idle), and how many of them are idle: asking for a proposal, or about
   * to. A worker that says nothing of itself (an older one) may take anything.
   */
  serving(study: StudyAnnouncement): { live: number; idle: number } {
    let live = 0;
    let idle = 0;
    for (const w of this.workers.values()) {
      const caps = w.capabilities;
      if (w.lost || (caps && (!caps.gpuIdle || whyNotServe(study, caps, caps) !== null))) continue;
      live++;
      if (w.state === 'idle') idle++;
    }
    return { live, idle };
  }
}

/**
 * How many proposals a study should have waiting in its queue: one per idle worker that may take
 * them (or per pull JetStream says is waiting, if more), plus a depth ahead that grows with the
 * live workers (`perWorker` each, rounded up, at least `minDepth`), so that a worker finishing a
 * trial finds the next one there; more when trials are so short that more workers than that
 * finish during the coordinator's turns (`perTurn`, `TurnPace.aheadWanted`), up to one per live
 * worker. The trial book bounds it by the budget and the canary.
 */
export function queueTarget(
  w: { live: number; idle: number },
  o: { minDepth: number; perWorker: number; waiting?: number; perTurn?: number },
): number {
  const ahead = Math.max(o.minDepth, Math.ceil(w.live * o.perWorker), Math.min(w.live, o.perTurn ?? 0));
  return Math.max(w.idle, o.waiting ?? 0) + ahead;
}
