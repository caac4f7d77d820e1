import { readdir, rm, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { formatBytes, type Logger } from '../../shared/index.js';
import { type CacheFile, classifyCacheFile, planEviction } from './eviction.js';

/** The cache as its worker's status shows it (the wire's `CacheStatus`). */
export interface CacheUsage {
  usedBytes: number;
  /** 0: no limit */
  limitBytes: number;
  blobs: number;
  pinnedBytes: number;
  evictedBlobs: number;
  evictedBytes: number;
}

/** The folder is read again from disk at most this often (files appear or go behind our back only when shared or tampered with). */
const RESCAN_MS = 60_000;
/** A blob fetched again this soon after its eviction means the limit is too small for the work (said at most once a minute). */
const THRASH_WINDOW_MS = 30 * 60_000;
const WARN_EVERY_MS = 60_000;
/** Evictions remembered for the thrash warning. */
const MAX_REMEMBERED = 10_000;

/**
 * The space a cache folder takes and what may be deleted from it: an index of its files (blobs,
 * partial and temporary files, all counted), the blobs in use (pinned, reference-counted), when
 * each was last used, and the eviction passes that keep it under its limit (one at a time).
 * Without a limit it only counts.
 */
export class CacheSpace {
  private files = new Map<string, CacheFile>();
  private readonly pins = new Map<string, number>();
  private readonly usedAt = new Map<string, number>();
  private readonly evictedAt = new Map<string, number>();
  private scannedAt = 0;
  private scanning: Promise<void> | undefined;
  /** what track/untrack did while a scan ran: replayed on its result, which may predate them */
  private changedDuringScan: [string, CacheFile | null][] = [];
  /** the tail of the eviction passes: each waits for the one before */
  private passes: Promise<void> = Promise.resolve();
  private evictedBlobs = 0;
  private evictedBytes = 0;
  private warnedOverAt = -Infinity;
  private warnedThrashAt = -Infinity;

  constructor(
    readonly dir: string,
    /** Infinity: no limit */
    readonly limitBytes: number,
    private readonly log: Logger,
    /** called before an evicted blob's file is deleted: it stops being served and announced */
    private readonly onEvict: (sha256: string) => void,
  ) {}

  get limited(): boolean {
    return Number.isFinite(this.limitBytes);
  }

  /** Reads the folder (once at start, then at most every RESCAN_MS). */
  scan(): Promise<void> {
    this.scanning ??= (async () => {
      this.changedDuringScan = [];
      const found = new Map<string, CacheFile>();
      const names = await readdir(this.dir).catch(() => [] as string[]);
      for (const name of names) {
        const what = classifyCacheFile(name);
        if (!what) continue;
        const st = await stat(join(this.dir, name)).catch(() => null);
        if (!st?.isFile()) continue;
        found.set(name, { name, ...what, bytes: st.size, usedMs: st.mtimeMs });
      }
      for (const [name, f] of this.changedDuringScan) {
        if (f) found.set(name, f);
        else found.delete(name);
      }
      this.files = found;
      this.scannedAt = Date.now();
    })().finally(() => (this.scanning = undefined));
    return this.scanning;
  }

  /** Keeps `sha256` (its blob and its partial or temporary file) from eviction until the returned function is called. */
  pin(sha256: string): () => void {
    this.pins.set(sha256, (this.pins.get(sha256) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = (this.pins.get(sha256) ?? 1) - 1;
      if (n > 0) this.pins.set(sha256, n);
      else this.pins.delete(sha256);
    };
  }

  /** Marks a blob used now; its file's mtime says so too, so a restarted worker keeps the order. */
  touch(sha256: string): void {
    const now = Date.now();
    const prev = this.usedAt.get(sha256) ?? 0;
    this.usedAt.set(sha256, now);
    // once a minute per blob is enough for the order across restarts
    if (now - prev > 60_000) {
      const s = now / 1000;
      void utimes(join(this.dir, sha256), s, s).catch(() => undefined);
    }
  }

  /** A file this process created (or whose size changed). */
  track(name: string, bytes: number): void {
    const what = classifyCacheFile(name);
    if (!what) return;
    const f = { name, ...what, bytes, usedMs: Date.now() };
    this.files.set(name, f);
    if (this.scanning) this.changedDuringScan.push([name, f]);
  }

  untrack(name: string): void {
    this.files.delete(name);
    if (this.scanning) this.changedDuringScan.push([name, null]);
  }

  /** Resolves once the eviction passes asked for so far are done (a blob found now stays). */
  settled(): Promise<void> {
    return this.passes;
  }

  /**
   * Makes room for `bytes` of blob `sha256` about to be fetched (its own partial file counted as
   * part of them): evicts unpinned files, least recently used first. When what is pinned does
   * not leave room, it evicts what it can, warns with the sizes, and lets the fetch go on.
   */
  makeRoom(sha256: string, bytes: number): Promise<void> {
    const pass = this.passes.then(() => this.pass(sha256, bytes));
    this.passes = pass.catch(() => undefined);
    return pass;
  }

  private async pass(sha256: string, bytes: number): Promise<void> {
    this.noteRefetch(sha256);
    if (!this.limited) return;
    if (Date.now() - this.scannedAt > RESCAN_MS) await this.scan();
    const files = [...this.files.values()]
      .filter((f) => f.blob !== sha256 && !(f.kind === 'temp' && sha256.startsWith(f.blob)))
      .map((f) => ({ ...f, usedMs: this.usedAt.get(f.blob) ?? f.usedMs }));
    const plan = planEviction(files, (f) => this.pinned(f), this.limitBytes, bytes);
    for (const f of plan.evict) {
      // pinned since the plan was made (nothing awaits between here and the plan but deletions)
      if (this.pinned(f)) continue;
      if (f.kind === 'blob') this.onEvict(f.blob);
      await rm(join(this.dir, f.name), { force: true }).catch(() => undefined);
      this.untrack(f.name);
      this.usedAt.delete(f.blob);
      this.evictedBlobs += f.kind === 'blob' ? 1 : 0;
      this.evictedBytes += f.bytes;
      this.remember(f.blob);
    }
    if (plan.evict.length > 0)
      this.log.info(
        {
          files: plan.evict.length,
          bytes: plan.evict.reduce((n, f) => n + f.bytes, 0),
          limitBytes: this.limitBytes,
          usedBytes: plan.afterBytes - bytes,
        },
        `cache: evicted ${plan.evict.length} least recently used files (${formatBytes(plan.evict.reduce((n, f) => n + f.bytes, 0))}) to stay under ${formatBytes(this.limitBytes)}`,
      );
    if (!plan.fits && Date.now() - this.warnedOverAt > WARN_EVERY_MS) {
      this.warnedOverAt = Date.now();
      this.log.warn(
        { limitBytes: this.limitBytes, pinnedBytes: plan.pinnedBytes, incomingBytes: bytes },
        `cache over its limit: ${formatBytes(plan.pinnedBytes)} in use (the kept studies' pools and sets, blobs being fetched) + ${formatBytes(bytes)} arriving > ${formatBytes(this.limitBytes)} (--cache-max-gb); nothing in use is evicted, so the cache stays over the limit until it is released`,
      );
    }
  }

  private pinned(f: CacheFile): boolean {
    if (f.kind !== 'temp') return this.pins.has(f.blob);
    for (const sha of this.pins.keys()) if (sha.startsWith(f.blob)) return true;
    return false;
  }

  private remember(blob: string): void {
    if (this.evictedAt.size >= MAX_REMEMBERED) this.evictedAt.delete(this.evictedAt.keys().next().value!);
    this.evictedAt.set(blob, Date.now());
  }

  /** A blob fetched again soon after it was evicted: the limit holds less than the work needs. */
  private noteRefetch(sha256: string): void {
    const at = this.evictedAt.get(sha256);
    if (at === undefined) return;
    this.evictedAt.delete(sha256);
    const ago = Date.now() - at;
    if (ago > THRASH_WINDOW_MS || Date.now() - this.warnedThrashAt < WARN_EVERY_MS) return;
    this.warnedThrashAt = Date.now();
    this.log.warn(
      { blob: sha256.slice(0, 12), evictedSecondsAgo: Math.round(ago / 1000), limitBytes: this.limitBytes },
      `cache: fetching again a blob evicted ${Math.round(ago / 1000)} s ago: ${formatBytes(this.limitBytes)} (--cache-max-gb) holds less than the studies this worker serves need; raise it, or limit the worker with --studies`,
    );
  }

  /** What the cache holds, as last counted (read from disk again when that is old). */
  usage(): CacheUsage {
    if (Date.now() - this.scannedAt > RESCAN_MS) void this.scan();
    let used = 0;
    let blobs = 0;
    let pinned = 0;
    for (const f of this.files.values()) {
      used += f.bytes;
      if (f.kind === 'blob') blobs++;
      if (this.pinned(f)) pinned += f.bytes;
    }
    return {
      usedBytes: used,
      limitBytes: this.limited ? this.limitBytes : 0,
      blobs,
      pinnedBytes: pinned,
      evictedBlobs: this.evictedBlobs,
      evictedBytes: this.evictedBytes,
    };
  }
}
