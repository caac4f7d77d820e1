import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

/** The lowercase hex sha256 of a byte string. */
export function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** A file's sha256 and size, streamed (a shard or an evaluation set may not fit in memory). */
export function hashFile(path: string): Promise<{ sha256: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    let bytes = 0;
    createReadStream(path)
      .on('data', (c) => {
        bytes += c.length;
        h.update(c);
      })
      .on('end', () => resolve({ sha256: h.digest('hex'), bytes }))
      .on('error', reject);
  });
}
