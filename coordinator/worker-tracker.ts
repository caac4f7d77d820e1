import {
  DEFAULT_LOST_AFTER_HEARTBEATS,
  type WorkerCacheStatus,
  type WorkerCapabilities,
  type WorkerStatus,
  type WorkerTransfer,
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
}
