import { nativeKernels } from '../native-kernels.js';
import { dtypeBytes } from '../onnx/dtype.js';
import type { BlobRef, TensorEntry } from './manifest.js';
import { type Pool, shardAt } from './reader.js';

/**
 * Zero-copy reads of a pool's shards for one pass over them (a merge): each shard is mapped into
 * memory by the native addon and a tensor's chunk is a view of the page cache, where `Pool.read`
 * copies it through Node's thread pool (merges of a 768 MiB-per-model pool took 11–17% less time
 * mapped on our 2-core machines; smaller pools, within noise).
 *
 * One shard per blob is mapped at a time: a pass goes through each blob in offset order, so the
 * previous shard is unmapped when the pass reaches the next, and the process holds at most one
 * shard's pages per blob. A view stays valid until the next `tensorView` of the same blob or
 * `close()`; after that it has length 0 (detached), never dangling. Where nothing can be mapped
 * (no addon, not POSIX, `OPTIMER_MMAP=0`, a mapping refused) `tensorView` returns undefined and the
 * caller reads; so does a range that straddles two shards. Shards are content-addressed files that
 * are renamed into place and never rewritten; one truncated while mapped would stop the process
 * (SIGBUS) where a read would fail, and one deleted stays readable until it is unmapped.
 */
export class ShardMaps {
  private readonly mapped = new Map<BlobRef, { shard: number; ab: ArrayBuffer }>();
  private readonly native = process.env.OPTIMER_MMAP === '0' ? null : nativeKernels();
  private disabled = !this.native?.mapFile || !this.native.unmapFile;

  constructor(private readonly pool: Pool) {}

  /** Elements [start, start + count) of a tensor in a blob, in place, or undefined (read them instead). */
  tensorView(blob: BlobRef, t: TensorEntry, start: number, count: number): Uint8Array | undefined {
    if (this.disabled) return undefined;
    const { offset, bytes } = this.pool.tensorRange(blob, t, start, count);
    const i = shardAt(blob, offset);
    const shard = blob.shards[i]!;
    const from = offset - shard.offset;
    // within one shard, and aligned to the element size as a chunk buffer would be (JavaScript kernels view it as floats)
    if (from < 0 || from + bytes > shard.bytes || from % dtypeBytes(t.dtype) !== 0) return undefined;
    let open = this.mapped.get(blob);
    if (open?.shard !== i) {
      if (open) this.native!.unmapFile!(open.ab);
      this.mapped.delete(blob);
      let ab: ArrayBuffer;
      try {
        ab = this.native!.mapFile!(this.pool.shardPath(shard.sha256));
      } catch {
        // the rest of the pass reads (not one failed mapping per chunk); a missing shard is
        // reported by the read that follows, with the pool's own message
        this.disabled = true;
        return undefined;
      }
      if (ab.byteLength !== shard.bytes) {
        this.native!.unmapFile!(ab);
        return undefined;
      }
      open = { shard: i, ab };
      this.mapped.set(blob, open);
    }
    return new Uint8Array(open.ab, from, bytes);
  }

  /** Unmaps every shard (their views get length 0). */
  close(): void {
    for (const { ab } of this.mapped.values()) this.native!.unmapFile!(ab);
    this.mapped.clear();
  }
}
