import { readFile } from 'node:fs/promises';
import {
  DEFAULT_STUDY_CONTEXTS,
  type LoadedEvalSet,
  loadEvalSet,
  type Logger,
  parseManifest,
  Pool,
  runAll,
  type StudyAnnouncement,
  weightParts,
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
}

/**
 * The studies a worker is ready for, most recently used first: a worker serving several studies
 * keeps each one's pool open and sets loaded instead of reloading them whenever the studies
 * alternate. Beyond `limit` the least recently used is closed (a worker runs one job at a time,
 * so the one in use is never the one evicted).
 */
export class StudyContexts {
  private readonly contexts: StudyContext[] = [];
  /** one set of merge buffers (one per part) for every study: a worker runs one job at a time (reused: no page faults) */
  private buffers: Uint8Array[] = [];

  constructor(
    private readonly cache: BlobCache,
    private readonly log: Logger,
    private readonly limit = DEFAULT_STUDY_CONTEXTS,
  ) {}

  /** The study's context, fetching (once) what it needs: manifest, pool shards, evaluation sets. */
  async get(ann: StudyAnnouncement, signal?: AbortSignal): Promise<StudyContext> {
    const key = `${ann.study}:${ann.generation}:${ann.manifest.sha256}`;
    const at = this.contexts.findIndex((c) => c.key === key);
    if (at >= 0) {
      const [hit] = this.contexts.splice(at, 1);
      this.contexts.unshift(hit!);
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

  /** The merge buffers, one per part of this study's layout, each large enough for its part. */
  mergeBuffers(ctx: StudyContext): Uint8Array[] {
    const parts = weightParts(ctx.pool.manifest);
    this.buffers.length = Math.min(this.buffers.length, parts.length); // parts this study lacks are let go
    parts.forEach((p, i) => {
      if ((this.buffers[i]?.length ?? -1) < p.bytes) {
        this.buffers[i] = new Uint8Array(0); // let the old one go before the new one is allocated
        this.buffers[i] = new Uint8Array(p.bytes);
      }
    });
    return this.buffers;
  }

  private async load(key: string, ann: StudyAnnouncement, signal?: AbortSignal): Promise<StudyContext> {
    const seeders = ann.seeders;
    const manifestPath = await this.cache.ensure(ann.manifest.sha256, ann.manifest.bytes, seeders);
    const manifest = parseManifest(JSON.parse(await readFile(manifestPath, 'utf8')), `manifest ${ann.manifest.sha256.slice(0, 12)}`);
    const pool = new Pool(manifest, this.cache.dir, `pool ${ann.manifest.sha256.slice(0, 12)}`);
    try {
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
      };
    } catch (e) {
      await pool.close();
      throw e;
    }
  }

  private async evict(which: (c: StudyContext, index: number) => boolean): Promise<void> {
    const gone = this.contexts.filter(which);
    for (const c of gone) this.contexts.splice(this.contexts.indexOf(c), 1);
    await runAll(gone.map((c) => () => c.pool.close()));
  }

  async close(): Promise<void> {
    this.buffers = [];
    await this.evict(() => true);
  }
}
