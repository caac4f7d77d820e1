import { readFile } from 'node:fs/promises';
import {
  DEFAULT_STUDY_CONTEXTS,
  formatBytes,
  type LoadedEvalSet,
  loadEvalSet,
  type Logger,
  parseManifest,
  OptimerError,
  Pool,
  type PoolManifest,
  runAll,
  type StudyAnnouncement,
} from '../shared/index.js';
import { ProviderGraphs } from './eval/widen.js';
import type { BlobCache } from './shards/fetch.js';

/** Everything a worker prepares once per study (and generation): pool, graph, sets. */
export interface StudyContext {
  key: string;
  announcement: StudyAnnouncement;
  pool: Pool;
  /** the pool's graph with the per-token loss appended, per provider: what each trial's session is made of */
  graphs: ProviderGraphs;
  dev: LoadedEvalSet[];
  test: LoadedEvalSet[];
  /** every blob it uses (manifest, shards, sets) with its size: pinned in the cache while it is kept */
  blobs: Map<string, number>;
  /** lets its blobs be evicted again */
  unpin: () => void;
}

/**
 * The studies a worker is ready for, most recently used first: a worker serving several studies
 * keeps each one's pool open and sets loaded instead of reloading them whenever the studies
 * alternate. Beyond `limit` the least recently used is closed (a worker runs one job at a time,
 * so the one in use is never the one evicted). A kept study's blobs are pinned in the cache;
 * when the cache has a limit and a new study's blobs would not fit beside them, the kept
 * studies are let go (least recently used first) so that the cache can evict their blobs, and a
 * study whose blobs alone exceed the limit is refused (CACHE_TOO_SMALL) before its shards are
 * fetched.
 */
export class StudyContexts {
  private readonly contexts: StudyContext[] = [];
  /** the blobs of each study context loaded so far (by content: a rerun's are the same): what taking it again would take */
  private readonly needs = new Map<string, Map<string, number>>();

  constructor(
    private readonly cache: BlobCache,
    private readonly log: Logger,
    private readonly limit = DEFAULT_STUDY_CONTEXTS,
  ) {}

  /**
   * Whether taking the study now would let a kept study go (their blobs do not fit together in
   * the cache limit). Known only for a study loaded before: a new one's size is in its manifest.
   */
  displaces(ann: StudyAnnouncement): boolean {
    const key = contextKey(ann);
    const blobs = this.needs.get(contentKey(ann));
    if (!blobs || !Number.isFinite(this.cache.limitBytes) || this.contexts.some((c) => c.key === key)) return false;
    return sum(blobs.values()) + this.keptBytes(new Set(blobs.keys())) > this.cache.limitBytes;
  }

  /** The study's context, fetching (once) what it needs: manifest, pool shards, evaluation sets. */
  async get(ann: StudyAnnouncement, signal?: AbortSignal): Promise<StudyContext> {
    const key = contextKey(ann);
    const at = this.contexts.findIndex((c) => c.key === key);
    if (at >= 0) {
      const [hit] = this.contexts.splice(at, 1);
      this.contexts.unshift(hit!);
      this.cache.touch(hit!.blobs.keys());
      return hit!;
    }
    // an older generation of the same study is never asked for again
    await this.evict((c) => c.announcement.study === ann.study);
    const t0 = performance.now();
    const ctx = await this.load(key, ann, signal);
    this.log.info({ study: ann.study, generation: ann.generation, ms: Math.round(performance.now() - t0) }, 'study ready');
    this.contexts.unshift(ctx);
    await this.evict((_, i) => i >= this.limit);
    return ctx;
  }

  private async load(key: string, ann: StudyAnnouncement, signal?: AbortSignal): Promise<StudyContext> {
    const seeders = ann.seeders;
    // the manifest says what the study needs; it too must find room beside the kept studies
    await this.makeRoomFor(ann, new Map([[ann.manifest.sha256, ann.manifest.bytes]]));
    let unpin = this.cache.pin([ann.manifest.sha256]);
    let manifest: PoolManifest;
    try {
      const manifestPath = await this.cache.ensure(ann.manifest.sha256, ann.manifest.bytes, seeders);
      manifest = parseManifest(JSON.parse(await readFile(manifestPath, 'utf8')), `manifest ${ann.manifest.sha256.slice(0, 12)}`);
    } catch (e) {
      unpin();
      throw e;
    }
    const pool = new Pool(manifest, this.cache.dir, `pool ${ann.manifest.sha256.slice(0, 12)}`);
    const blobs = studyBlobs(ann, pool);
    if (this.needs.size >= MAX_NEEDS_KEPT) this.needs.delete(this.needs.keys().next().value!);
    this.needs.set(contentKey(ann), blobs);
    try {
      await this.makeRoomFor(ann, blobs);
      // every blob pinned before the first is fetched: fetching the last never evicts the first
      const unpinManifest = unpin;
      unpin = this.cache.pin(blobs.keys());
      unpinManifest();
      for (const s of pool.allShards()) {
        signal?.throwIfAborted();
        await this.cache.ensure(s.sha256, s.bytes, seeders, s.pieces);
      }
      const loadSets = async (which: 'dev' | 'test'): Promise<LoadedEvalSet[]> => {
        const out: LoadedEvalSet[] = [];
        for (const s of ann.sets) {
          const ref = s[which];
          if (!ref.sha256) continue;
          const path = await this.cache.ensure(ref.sha256, ref.bytes, seeders);
          out.push(await loadEvalSet({ name: s.name, path, weight: s.weight, metric: s.metric }, pool.evalSetContext()));
        }
        return out;
      };
      return {
        key,
        announcement: ann,
        pool,
        graphs: new ProviderGraphs(await pool.graphBytes(), manifest.model, `${pool.label}: graph`),
        dev: await loadSets('dev'),
        test: await loadSets('test'),
        blobs,
        unpin,
      };
    } catch (e) {
      unpin();
      await pool.close();
      throw e;
    }
  }

  /**
   * With a cache limit: refuses a study whose blobs alone exceed it, and lets kept studies go
   * (least recently used first) while their blobs and the new study's would not fit together.
   */
  private async makeRoomFor(ann: StudyAnnouncement, blobs: Map<string, number>): Promise<void> {
    const limit = this.cache.limitBytes;
    if (!Number.isFinite(limit)) return;
    const need = sum(blobs.values());
    if (need > limit) {
      const shards = Math.max(0, need - ann.manifest.bytes - setBytes(ann, blobs));
      throw new OptimerError(
        'CACHE_TOO_SMALL',
        `study ${ann.study}: its pool and sets need ${formatBytes(need)} (shards ${formatBytes(shards)}, evaluation sets ${formatBytes(setBytes(ann, blobs))}, manifest ${formatBytes(ann.manifest.bytes)}) ` +
          `but this worker's cache is limited to ${formatBytes(limit)} (--cache-max-gb); it does not serve this study`,
      );
    }
    while (this.contexts.length > 0 && need + this.keptBytes(new Set(blobs.keys())) > limit) {
      const gone = this.contexts.at(-1)!;
      this.log.info(
        { study: gone.announcement.study, keptBytes: sum(gone.blobs.values()), limitBytes: limit },
        `letting the kept study ${gone.announcement.study} go: its blobs and those of ${ann.study} do not fit together in the cache limit (${formatBytes(limit)})`,
      );
      await this.evict((c) => c === gone);
    }
  }

  /** The kept studies' blobs, less those in `besides` (shared blobs count once). */
  private keptBytes(besides: ReadonlySet<string>): number {
    const other = new Map<string, number>();
    for (const c of this.contexts) for (const [sha, b] of c.blobs) if (!besides.has(sha)) other.set(sha, b);
    return sum(other.values());
  }

  private async evict(which: (c: StudyContext, index: number) => boolean): Promise<void> {
    const gone = this.contexts.filter(which);
    for (const c of gone) this.contexts.splice(this.contexts.indexOf(c), 1);
    // the pool's files are closed before its blobs may be evicted
    await runAll(gone.map((c) => () => c.pool.close().finally(c.unpin)));
  }

  async close(): Promise<void> {
    await this.evict(() => true);
  }
}

/** Studies whose size a worker remembers (a long-lived worker sees many generations). */
const MAX_NEEDS_KEPT = 64;

function contextKey(ann: StudyAnnouncement): string {
  return `${ann.study}:${ann.generation}:${ann.manifest.sha256}`;
}

/** What a study's blobs are made of: its manifest and its sets, whatever its name and run. */
function contentKey(ann: StudyAnnouncement): string {
  return [ann.manifest.sha256, ...ann.sets.flatMap((s) => [s.dev.sha256, s.test.sha256])].join(':');
}

/** Every blob a study's context uses, with its size: the manifest, the pool's shards, the sets. */
function studyBlobs(ann: StudyAnnouncement, pool: Pool): Map<string, number> {
  const out = new Map<string, number>([[ann.manifest.sha256, ann.manifest.bytes]]);
  for (const s of pool.allShards()) out.set(s.sha256, s.bytes);
  for (const s of ann.sets) for (const ref of [s.dev, s.test]) if (ref.sha256) out.set(ref.sha256, ref.bytes);
  return out;
}

function setBytes(ann: StudyAnnouncement, blobs: Map<string, number>): number {
  const sets = new Set(ann.sets.flatMap((s) => [s.dev.sha256, s.test.sha256]).filter(Boolean));
  return sum([...sets].map((sha) => blobs.get(sha) ?? 0));
}

function sum(xs: Iterable<number>): number {
  let n = 0;
  for (const x of xs) n += x;
  return n;
}
