import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { PieceHasher } from './pieces.js';

/** The lowercase hex sha256 of a byte string. */
export function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * A file's sha256 and size, streamed (a shard or an evaluation set may not fit in memory); with
 * `pieceBytes`, also the hash of each piece of that size, in the same pass.
 */
export function hashFile(path: string, pieceBytes = 0): Promise<{ sha256: string; bytes: number; pieces?: string[] }> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    const pieces = pieceBytes > 0 ? new PieceHasher(pieceBytes) : undefined;
    let bytes = 0;
    createReadStream(path)
      .on('data', (c) => {
        bytes += c.length;
        h.update(c);
        pieces?.update(c as Buffer);
      })
      .on('end', () => resolve({ sha256: h.digest('hex'), bytes, ...(pieces && { pieces: pieces.finish() }) }))
      .on('error', reject);
  });
}
