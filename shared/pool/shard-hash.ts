import { createHash } from 'node:crypto';
import { PieceHasher } from '../pieces.js';
import { nativeKernels } from '../native-kernels.js';
import { Sha256Pair } from './sha256-pair.js';

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
    const blocks = pairedBlocks(pieceBytes);
    if (blocks) {
      const pair = new Sha256Pair(blocks, pieceBytes);
      return {
        update: (bytes) => hashSoon(pair, bytes),
        async digest() {
          return pair.digest();
        },
        discard() {},
      };
    }
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

/**
 * The updates asked for in this turn of the event loop (the pool build's K + 1 writers ask for theirs
 * one after the other), hashed together once they are all in: shards in lockstep run side by side
 * (Sha256Pair.updateMany).
 */
let batch: { pair: Sha256Pair; bytes: Uint8Array; resolve: () => void; reject: (e: unknown) => void }[] = [];

function hashSoon(pair: Sha256Pair, bytes: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    if (batch.length === 0) queueMicrotask(hashBatch);
    batch.push({ pair, bytes, resolve, reject });
  });
}

function hashBatch(): void {
  const b = batch;
  batch = [];
  try {
    Sha256Pair.updateMany(
      b.map((u) => u.pair),
      b.map((u) => u.bytes),
    );
  } catch (e) {
    for (const u of b) u.reject(e);
    return;
  }
  for (const u of b) u.resolve();
}

/**
 * The native SHA-NI compression function where a shard's two hashes can run as one pass (Sha256Pair):
 * the addon is loaded and has it, and pieces are whole 64-byte blocks. Otherwise undefined: node:crypto.
 */
export function pairedBlocks(pieceBytes: number): ((states: Uint32Array, data: Uint8Array[]) => void) | undefined {
  const blocks = nativeKernels()?.sha256Blocks;
  return blocks && pieceBytes % 64 === 0 ? blocks : undefined;
}
