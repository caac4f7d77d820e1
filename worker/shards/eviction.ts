/**
 * The cache's eviction policy, pure: which files to delete so that what stays, plus a blob about
 * to arrive, fits under the limit. Least recently used first; pinned files (in use) never.
 */

/** A file of the cache folder as the policy sees it. */
export interface CacheFile {
  /** its name in the cache folder */
  name: string;
  /**
   * the blob it holds or is becoming: the full sha256 for a blob and a partial file, the first
   * 16 hex digits for a temporary file (a whole-blob download names only those)
   */
  blob: string;
  /** a complete blob, a partial file of pieces (`.part-`), or a whole-blob download (`.tmp-`) */
  kind: 'blob' | 'partial' | 'temp';
  /** its size (a partial file is created at the blob's full size, so it counts as that) */
  bytes: number;
  /** when it was last used, ms */
  usedMs: number;
}

export interface EvictionPlan {
  /** the files to delete, least recently used first */
  evict: CacheFile[];
  /** every file's bytes, before evicting */
  usedBytes: number;
  /** bytes of the pinned files */
  pinnedBytes: number;
  /** what the cache holds once the plan is done and the reserve has arrived */
  afterBytes: number;
  /** false when the pinned files and the reserve alone exceed the limit (nothing more can be done) */
  fits: boolean;
}

/**
 * Which files to evict so that `used − evicted + reserveBytes ≤ limitBytes`: unpinned files,
 * least recently used first (ties: partial and temporary files before complete blobs, then by
 * name, so the plan is deterministic). When even every unpinned file is not enough, all of them
 * go and `fits` is false: the caller says so rather than evicting what is in use.
 */
export function planEviction(
  files: readonly CacheFile[],
  pinned: (f: CacheFile) => boolean,
  limitBytes: number,
  reserveBytes = 0,
): EvictionPlan {
  const usedBytes = files.reduce((n, f) => n + f.bytes, 0);
  const pinnedBytes = files.reduce((n, f) => n + (pinned(f) ? f.bytes : 0), 0);
  let after = usedBytes + reserveBytes;
  const evict: CacheFile[] = [];
  if (after > limitBytes) {
    const rank = (f: CacheFile) => (f.kind === 'blob' ? 1 : 0);
    const candidates = files
      .filter((f) => !pinned(f))
      .sort((a, b) => a.usedMs - b.usedMs || rank(a) - rank(b) || a.name.localeCompare(b.name));
    for (const f of candidates) {
      if (after <= limitBytes) break;
      evict.push(f);
      after -= f.bytes;
    }
  }
  return { evict, usedBytes, pinnedBytes, afterBytes: after, fits: after <= limitBytes };
}

const BLOB = /^[0-9a-f]{64}$/;
const PARTIAL = /^\.part-([0-9a-f]{64})(?:-[0-9a-f]{12})?$/;
const TEMP = /^\.tmp-([0-9a-f]{16})-[0-9a-f]{12}$/;

/** What a cache folder's file is, from its name; null for anything else (marker files, strays). */
export function classifyCacheFile(name: string): Pick<CacheFile, 'blob' | 'kind'> | null {
  if (BLOB.test(name)) return { blob: name, kind: 'blob' };
  const part = PARTIAL.exec(name);
  if (part) return { blob: part[1]!, kind: 'partial' };
  const tmp = TEMP.exec(name);
  if (tmp) return { blob: tmp[1]!, kind: 'temp' };
  return null;
}
