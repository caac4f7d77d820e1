import type { JetStreamClient, KV, KvEntry, QueuedIterator } from 'nats';
import { announcementCodec, LOCKS_BUCKET, STUDIES_BUCKET, type StudyAnnouncement, withTimeout } from '../shared/index.js';

/** An announcement as the bucket holds it: decoded, or why it cannot be. */
export interface KnownAnnouncement {
  revision: number;
  ann: StudyAnnouncement | null;
  /** why `ann` is null (a malformed announcement) */
  error?: Error;
}

/** A watch that has not given the bucket's current values within this long is given up (and opened again). */
const SNAPSHOT_MS = 10_000;

/**
 * What a worker knows of the mesh's studies: their announcements and which ones a coordinator
 * holds the lock of, kept by watches of the two buckets. Reading the announcement per proposal
 * and listing both buckets every few seconds (two ephemeral consumers each time) cost a round trip
 * per trial and nats-server's CPU; the watches cost neither.
 *
 * A lock that expires (its coordinator killed) leaves no trace in a watch on this server (no
 * delete marker): a lock not seen refreshed for half the bucket's TTL is read again (`recheck`)
 * until it is refreshed or gone, as the key listing saw it. After a reconnect the worker opens a
 * new board (`stale`): a fresh snapshot, so nothing missed meanwhile survives.
 */
export class StudyBoard {
  private readonly announcements = new Map<string, KnownAnnouncement>();
  /** study → when its lock was last seen written (local ms, never later than now) and its revision */
  private readonly locks = new Map<string, { revision: number; seenAt: number }>();
  private locksKv: KV | undefined;
  private locksTtlMs = 0;
  private readonly watches: QueuedIterator<KvEntry>[] = [];
  private closed = false;
  /** bumped on every change the worker's list of studies depends on */
  version = 0;
  /** set when a watch ended or NATS reconnected: the worker opens a new board */
  stale: Error | undefined;

  private constructor(
    private readonly js: JetStreamClient,
    private readonly studies: KV,
  ) {}

  /** Binds the studies bucket (throws while it does not exist) and waits for both snapshots. */
  static async open(js: JetStreamClient): Promise<StudyBoard> {
    const studies = await js.views.kv(STUDIES_BUCKET, { bindOnly: true });
    const board = new StudyBoard(js, studies);
    try {
      await board.watch(studies, STUDIES_BUCKET, (e) => board.onAnnouncement(e));
      await board.watchLocks();
    } catch (e) {
      board.close();
      throw e;
    }
    return board;
  }

  /** The announcement as last seen, or undefined when the study is not announced. */
  announcement(study: string): KnownAnnouncement | undefined {
    return this.announcements.get(study);
  }

  /** The announced studies. */
  announced(): string[] {
    return [...this.announcements.keys()];
  }

  /** Studies whose coordinator holds its lock; undefined when the mesh has no lock bucket (an older coordinator). */
  held(): Set<string> | undefined {
    return this.locksKv ? new Set(this.locks.keys()) : undefined;
  }

  /**
   * The announcement a proposal is worked under: the local copy when it is of the proposal's run
   * and at least as recent as the announcement the proposal was made under (its revision, 0 from
   * an older coordinator), else the bucket's: the watch may be behind a study just announced, or
   * rerun or resumed with new requirements. Null when the study is not announced.
   */
  async forProposal(p: {
    study: string;
    generation: number;
    announcementRevision?: number | undefined;
  }): Promise<KnownAnnouncement | null> {
    const known = this.announcements.get(p.study);
    if (known?.ann && known.ann.generation === p.generation && known.revision >= (p.announcementRevision ?? 0)) return known;
    return this.read(p.study);
  }

  /** Reads a study's announcement from the bucket (the local copy may be behind); null when it is gone. */
  async read(study: string): Promise<KnownAnnouncement | null> {
    const entry = await this.studies.get(study);
    if (entry?.operation !== 'PUT' || entry.length === 0) return null;
    const known = this.announcements.get(study);
    if (known && known.revision >= entry.revision) return known;
    return decode(entry); // not kept: the watch brings it in order
  }

  /**
   * Binds the lock bucket if it was missing (a newer coordinator may have made it), and reads
   * again each lock not seen refreshed for half the TTL: one whose coordinator was killed expires
   * without a word in the watch.
   */
  async recheck(): Promise<void> {
    if (!this.locksKv) {
      await this.watchLocks();
      return;
    }
    if (!(this.locksTtlMs > 0)) return;
    const now = Date.now();
    for (const [study, l] of [...this.locks]) {
      if (now - l.seenAt < this.locksTtlMs / 2) continue;
      const entry = await this.locksKv.get(study);
      if (this.locks.get(study) !== l) continue; // the watch changed it meanwhile
      if (entry?.operation !== 'PUT') {
        this.locks.delete(study);
        this.version++;
      } else if (entry.revision > l.revision) this.locks.set(study, { revision: entry.revision, seenAt: Date.now() });
    }
  }

  close(): void {
    this.closed = true;
    for (const w of this.watches) w.stop();
  }

  private async watchLocks(): Promise<void> {
    let kv: KV;
    try {
      kv = await this.js.views.kv(LOCKS_BUCKET, { bindOnly: true });
      this.locksTtlMs = (await kv.status()).ttl; // throws when the bucket does not exist
    } catch {
      return; // no lock bucket (yet): every announced study counts as run
    }
    await this.watch(kv, LOCKS_BUCKET, (e) => this.onLock(e));
    this.locksKv = kv;
    this.version++;
  }

  /** Watches a bucket, feeding `on` each entry; resolves once the bucket's current values are in. */
  private async watch(kv: KV, bucket: string, on: (e: KvEntry) => void): Promise<void> {
    let initialized!: () => void;
    const ready = new Promise<void>((resolve) => {
      initialized = resolve;
    });
    const w = await kv.watch({ initializedFn: () => initialized() });
    this.watches.push(w);
    void (async () => {
      try {
        for await (const e of w) on(e);
      } catch (e) {
        this.stale ??= e as Error;
      }
      if (!this.closed) this.stale ??= new Error(`the watch of ${bucket} ended`);
      initialized();
    })();
    await withTimeout(ready, SNAPSHOT_MS, `reading the bucket ${bucket}`);
    if (this.stale) throw this.stale;
  }

  private onAnnouncement(e: KvEntry): void {
    if (e.operation !== 'PUT' || e.length === 0) this.announcements.delete(e.key);
    else this.announcements.set(e.key, decode(e));
    this.version++;
  }

  private onLock(e: KvEntry): void {
    if (e.operation !== 'PUT') {
      if (this.locks.delete(e.key)) this.version++;
      return;
    }
    // the server's time of the write, bounded by ours: a lock written long ago is read again soon
    const had = this.locks.has(e.key);
    this.locks.set(e.key, { revision: e.revision, seenAt: Math.min(Date.now(), e.created.getTime()) });
    if (!had) this.version++;
  }
}

function decode(e: KvEntry): KnownAnnouncement {
  try {
    return { revision: e.revision, ann: announcementCodec.decode(e.value, `announcement of ${e.key}`) };
  } catch (err) {
    return { revision: e.revision, ann: null, error: err as Error };
  }
}
