import { createHash } from 'node:crypto';
import { PieceHasher } from '../pieces.js';

/** A shard's name (the sha256 of its bytes) and, when it is cut into pieces, each piece's sha256. */
export interface ShardDigest {
  sha256: string;
  pieces?: string[];
}

/** One shard's hashes, kept as its bytes are written. */
export interface ShardHash {
  /** Hashes the next bytes; once it resolves they have been read and the caller may reuse them. */
  update(bytes: Uint8Array): Promise<void>;
  digest(): Promise<ShardDigest>;
  /** Forgets the shard (a failed build): no digest follows. */
  discard(): void;
}

/** Where the shard writers' hashing runs: on this thread, or on hashing threads (hash-threads.ts). */
export interface Hashing {
  /** `pieceBytes`: also hash each piece of that size (0: the shard's hash only) */
  shard(pieceBytes: number): ShardHash;
  close(): Promise<void>;
}

/** Hashing on the calling thread: the fallback where hashing threads cannot start, and the path they must match. */
export const mainThreadHashing: Hashing = {
  shard(pieceBytes: number): ShardHash {
    const hash = createHash('sha256');
    const pieces = pieceBytes > 0 ? new PieceHasher(pieceBytes) : undefined;
    return {
      async update(bytes) {
        hash.update(bytes);
        pieces?.update(bytes);
      },
      async digest() {
        return { sha256: hash.digest('hex'), ...(pieces && { pieces: pieces.finish() }) };
      },
      discard() {},
    };
  },
  async close() {},
};

/**
 * A zeroed buffer in shared memory: hashing threads read bytes written from it where they lie,
 * where any other buffer is copied into shared memory for them first.
 */
export function sharedBytes(length: number): Uint8Array {
  return new Uint8Array(new SharedArrayBuffer(length));
}
