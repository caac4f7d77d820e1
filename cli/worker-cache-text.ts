import type { StatusWorker } from '../coordinator/index.js';
import { formatBytes } from '../shared/index.js';

/** A worker's cache in one cell: `1.20 GiB / 4.00 GiB, 12 blobs` (`no limit` when it has none). */
export function cacheText(w: StatusWorker): string {
  const c = w.cache;
  if (!c) return '-';
  const limit = c.limitBytes === null ? 'no limit' : formatBytes(c.limitBytes);
  const evicted = c.evictedBlobs > 0 ? `, ${c.evictedBlobs} evicted` : '';
  return `${formatBytes(c.usedBytes)} / ${limit}, ${c.blobs} blobs${evicted}`;
}

/** One line per transfer under way: which blob, how far, how fast, from where. */
export function transferLines(workers: readonly StatusWorker[]): string[] {
  return workers.flatMap((w) =>
    w.transfers.map((t) => {
      const pct = t.bytes > 0 ? ` (${Math.floor((100 * t.doneBytes) / t.bytes)}%)` : '';
      return (
        `  ${w.id} fetching ${t.blob}: ${formatBytes(t.doneBytes)} of ${formatBytes(t.bytes)}${pct}, ${formatBytes(t.bytesPerSecond)}/s, ` +
        `${formatBytes(t.fromPeers)} from ${t.peers} peer${t.peers === 1 ? '' : 's'}, ${formatBytes(t.fromCoordinator)} from the coordinator`
      );
    }),
  );
}
