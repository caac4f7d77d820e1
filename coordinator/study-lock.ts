import { hostname } from 'node:os';
import type { JetStreamClient, KV } from 'nats';
import { DEFAULT_LOCK_TTL_MS, DEFAULT_LOCK_WAIT_MARGIN_MS, LOCKS_BUCKET, OptimerError } from '../shared/index.js';

interface Owner {
  host: string;
  pid: number;
  since: string;
}

export interface StudyLockOptions {
  ttlMs?: number;
  /** how much longer than the TTL to wait for a stale lock (its coordinator killed) to expire */
  waitMarginMs?: number;
  /** told once when the study is locked and this coordinator waits for the lock to expire */
  onWait?: (message: string) => void;
  /** told when a refresh fails (NATS down, or the lock was taken over) */
  onLost?: (err: Error) => void;
  /** JetStream copies of the locks bucket (a cluster's replication factor) */
  replicas?: number;
}

/**
 * One coordinator per study on a NATS mesh: a key in the `optimer_locks` bucket (its values
 * expire after the TTL), taken with `create`, refreshed with `update` every third of the TTL,
 * deleted on release. A lock whose coordinator was killed outright is not refreshed and
 * expires: a new coordinator waits for that (TTL + a margin). A lock seen refreshed while
 * waiting has a live owner: refused at once.
 */
export class StudyLock {
  private timer: NodeJS.Timeout | undefined;
  private released = false;
  private refreshing: Promise<void> = Promise.resolve();

  private constructor(
    private readonly kv: KV,
    private readonly study: string,
    private readonly value: Uint8Array,
    private revision: number,
    private readonly onLost: ((err: Error) => void) | undefined,
    ttlMs: number,
  ) {
    this.timer = setInterval(
      () => {
        this.refreshing = this.refresh();
      },
      Math.max(50, Math.floor(ttlMs / 3)),
    );
    this.timer.unref();
  }

  static async acquire(js: JetStreamClient, study: string, o: StudyLockOptions = {}): Promise<StudyLock> {
    const ttlMs = o.ttlMs ?? DEFAULT_LOCK_TTL_MS;
    const kv = await js.views.kv(LOCKS_BUCKET, { history: 1, ttl: ttlMs, replicas: o.replicas ?? 1 });
    const owner: Owner = { host: hostname(), pid: process.pid, since: new Date().toISOString() };
    const value = new TextEncoder().encode(JSON.stringify(owner));
    const deadline = Date.now() + ttlMs + (o.waitMarginMs ?? DEFAULT_LOCK_WAIT_MARGIN_MS);
    let seen: { revision: number; owner: string } | undefined;
    for (;;) {
      try {
        const revision = await kv.create(study, value);
        return new StudyLock(kv, study, value, revision, o.onLost, ttlMs);
      } catch (e) {
        if (!/wrong last sequence|exists/i.test((e as Error).message)) throw e;
      }
      const entry = await kv.get(study).catch(() => null);
      if (entry?.operation !== 'PUT') {
        // gone meanwhile: try again (bounded, should NATS keep failing)
        if (Date.now() >= deadline) throw new OptimerError('SETUP', `could not take the lock of study '${study}' on this NATS`);
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      const holder = describe(entry.string());
      const busy = (): OptimerError =>
        new OptimerError(
          'SETUP',
          `study '${study}' is run by another coordinator (${holder}) on this NATS; stop that one first ` +
            `(the study is free within ${Math.round(ttlMs / 1000)} s after it stops)`,
        );
      if (seen && entry.revision !== seen.revision) throw busy(); // refreshed: its owner is alive
      if (!seen) {
        seen = { revision: entry.revision, owner: holder };
        o.onWait?.(
          `study '${study}' is locked by another coordinator (${holder}); ` +
            `waiting up to ${Math.round((deadline - Date.now()) / 1000)} s for the lock to expire (a stopped coordinator's lock does)`,
        );
      }
      if (Date.now() >= deadline) throw busy();
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  private async refresh(): Promise<void> {
    if (this.released) return;
    try {
      this.revision = await this.kv.update(this.study, this.value, this.revision);
    } catch (e) {
      // expired meanwhile (NATS was out past the TTL) and nobody took it: take it again
      const again = await this.kv.create(this.study, this.value).catch(() => undefined);
      if (again !== undefined) this.revision = again;
      else if (!this.released) this.onLost?.(e as Error);
    }
  }

  /** Frees the study at once (a lock still ours only). */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    clearInterval(this.timer);
    await this.refreshing;
    await this.kv.delete(this.study, { previousSeq: this.revision }).catch(() => undefined);
  }
}

function describe(raw: string): string {
  try {
    const o = JSON.parse(raw) as Owner;
    return `host ${o.host}, pid ${o.pid}, since ${o.since}`;
  } catch {
    return raw;
  }
}
