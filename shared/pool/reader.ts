import { open, readFile, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { OptimerError } from '../errors.js';
import { hashFile } from '../hash.js';
import { dtypeBytes } from '../onnx/dtype.js';
import type { PieceList } from '../pieces.js';
import { parseTokenizer, type TextTokenizer } from '../tokenizer.js';
import { readManifest, SHARDS_DIR, type BlobRef, type PoolManifest, type TensorEntry, type VectorEntry } from './manifest.js';

/**
 * Read access to a pool: byte ranges of blobs, read across shard boundaries, one open file
 * per shard. `shardsDir` is the pool's own `shards/` or a worker's content-addressed cache.
 */
export class Pool {
  private readonly handles = new Map<string, Promise<FileHandle>>();
  private tokenizerLoad: Promise<TextTokenizer | null> | undefined;

  constructor(
    readonly manifest: PoolManifest,
    readonly shardsDir: string,
    readonly label: string,
  ) {}

  static async open(dir: string): Promise<Pool> {
    return new Pool(await readManifest(dir), join(dir, SHARDS_DIR), dir);
  }

  vector(name: string): VectorEntry {
    const v = this.manifest.vectors.find((x) => x.name === name);
    if (!v) {
      const known = this.manifest.vectors.map((x) => x.name).join(', ');
      throw new OptimerError('BAD_ARGUMENT', `${this.label}: no vector '${name}' in the pool (it has: ${known})`);
    }
    return v;
  }

  /** `bytes` bytes at `offset` of a blob, into `out` (allocated when not given). */
  async read(blob: BlobRef, offset: number, bytes: number, out: Uint8Array = new Uint8Array(bytes)): Promise<Uint8Array> {
    if (offset < 0 || offset + bytes > blob.bytes) {
      throw new OptimerError('BAD_POOL', `${this.label}: read [${offset}, ${offset + bytes}) outside a blob of ${blob.bytes} bytes`);
    }
    let done = 0;
    for (let i = shardAt(blob, offset); done < bytes; i++) {
      const shard = blob.shards[i]!;
      const from = offset + done - shard.offset;
      const n = Math.min(bytes - done, shard.bytes - from);
      const fh = await this.handle(shard.sha256);
      let got = 0;
      while (got < n) {
        const { bytesRead } = await fh.read(out, done + got, n - got, from + got);
        if (bytesRead === 0) throw new OptimerError('BAD_POOL', `${this.label}: shard ${shard.sha256} is shorter than the manifest says`);
        got += bytesRead;
      }
      done += n;
    }
    return out;
  }

  /** Elements [start, start + count) of a tensor in a blob. */
  readTensor(blob: BlobRef, t: TensorEntry, start = 0, count?: number, out?: Uint8Array): Promise<Uint8Array> {
    const { offset, bytes } = this.tensorRange(blob, t, start, count ?? t.bytes / dtypeBytes(t.dtype) - start);
    return this.read(blob, offset, bytes, out);
  }

  /** Where a tensor's elements [start, start + count) lie in a blob: byte offset and length. */
  tensorRange(blob: BlobRef, t: TensorEntry, start: number, count: number): { offset: number; bytes: number } {
    const elemBytes = dtypeBytes(t.dtype);
    const offset = blob.tensors[t.name];
    if (offset === undefined) throw new OptimerError('BAD_POOL', `${this.label}: tensor '${t.name}' is not in this blob`);
    return { offset: offset + start * elemBytes, bytes: count * elemBytes };
  }

  /** The file of a shard. */
  shardPath(sha256: string): string {
    return join(this.shardsDir, sha256);
  }

  async graphBytes(): Promise<Uint8Array> {
    const path = join(this.shardsDir, this.manifest.graph.sha256);
    try {
      return await readFile(path);
    } catch (e) {
      throw new OptimerError('BAD_POOL', `${this.label}: graph shard ${this.manifest.graph.sha256} is missing`, { cause: e });
    }
  }

  /** The pool's tokenizer (parsed once), or null if it was built without --tokenizer. */
  tokenizer(): Promise<TextTokenizer | null> {
    this.tokenizerLoad ??= (async () => {
      const ref = this.manifest.tokenizer;
      if (!ref) return null;
      let bytes: Uint8Array;
      try {
        bytes = await readFile(join(this.shardsDir, ref.sha256));
      } catch (e) {
        throw new OptimerError('BAD_POOL', `${this.label}: tokenizer shard ${ref.sha256} is missing`, { cause: e });
      }
      return parseTokenizer(bytes, `${this.label}: tokenizer`);
    })();
    return this.tokenizerLoad;
  }

  /** What reading evaluation sets for this pool takes: the model's limits and the tokenizer. */
  evalSetContext(): { vocab: number | null; contextLength: number | null; tokenizer: () => Promise<TextTokenizer | null> } {
    const { vocab, contextLength } = this.manifest.model;
    return { vocab, contextLength, tokenizer: () => this.tokenizer() };
  }

  /** Every shard the pool needs: the graph, the tokenizer, the base blob and each vector's blob. */
  allShards(): { sha256: string; bytes: number; pieces?: PieceList }[] {
    const m = this.manifest;
    const seen = new Map<string, { sha256: string; bytes: number; pieces?: PieceList }>([[m.graph.sha256, m.graph]]);
    if (m.tokenizer) seen.set(m.tokenizer.sha256, m.tokenizer);
    for (const b of [m.base.blob, ...m.vectors.map((v) => v.blob)])
      for (const s of b.shards)
        seen.set(s.sha256, {
          sha256: s.sha256,
          bytes: s.bytes,
          ...(s.pieceBytes !== undefined && { pieces: { pieceBytes: s.pieceBytes, pieces: s.pieces! } }),
        });
    return [...seen.values()].map((s) => ({ sha256: s.sha256, bytes: s.bytes, ...(s.pieces && { pieces: s.pieces }) }));
  }

  /**
   * Every shard is there with its manifest size: cheap (a stat each), unlike `verify`, so a
   * coordinator runs it at each start; content is checked by every worker on arrival.
   */
  async checkSizes(): Promise<void> {
    for (const { sha256, bytes } of this.allShards()) {
      const size = await stat(join(this.shardsDir, sha256)).then(
        (st) => st.size,
        (e: unknown) => {
          throw new OptimerError('BAD_POOL', `${this.label}: shard ${sha256} is missing`, { cause: e });
        },
      );
      if (size !== bytes)
        throw new OptimerError('BAD_POOL', `${this.label}: shard ${sha256} has ${size} bytes, the manifest says ${bytes}`);
    }
  }

  /**
   * Re-hashes every shard, and each of its pieces where it has them (workers fetching by pieces
   * check only those, so a piece list must describe the shard it names); throws naming the first
   * shard that is missing or altered.
   */
  async verify(): Promise<void> {
    for (const { sha256, pieces } of this.allShards()) {
      const got = await hashFile(join(this.shardsDir, sha256), pieces?.pieceBytes).catch((e: unknown) => {
        throw new OptimerError('BAD_POOL', `${this.label}: shard ${sha256} is missing`, { cause: e });
      });
      if (got.sha256 !== sha256)
        throw new OptimerError('BAD_POOL', `${this.label}: shard ${sha256} is corrupt (its content hashes to ${got.sha256})`);
      const bad = pieces ? got.pieces!.findIndex((h, i) => h !== pieces.pieces[i]) : -1;
      if (bad >= 0)
        throw new OptimerError(
          'BAD_POOL',
          `${this.label}: shard ${sha256}: piece ${bad} hashes to ${got.pieces![bad]}, the manifest lists ${pieces!.pieces[bad]}`,
        );
    }
  }

  private handle(sha256: string): Promise<FileHandle> {
    let h = this.handles.get(sha256);
    if (!h) {
      h = open(this.shardPath(sha256), 'r').catch((e: unknown) => {
        this.handles.delete(sha256);
        throw new OptimerError('BAD_POOL', `${this.label}: shard ${sha256} is missing`, { cause: e });
      });
      this.handles.set(sha256, h);
    }
    return h;
  }

  async close(): Promise<void> {
    const all = await Promise.allSettled(this.handles.values());
    this.handles.clear();
    await Promise.all(all.map((h) => (h.status === 'fulfilled' ? h.value.close() : undefined)));
  }
}

/** The index of the shard holding byte `offset` of a blob (shards are sorted by offset). */
export function shardAt(blob: BlobRef, offset: number): number {
  let lo = 0;
  let hi = blob.shards.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (blob.shards[mid]!.offset <= offset) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}
