import { DEFAULT_SHARD_BYTES } from '../defaults.js';
import { randomBytes } from 'node:crypto';
import { open, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { BlobRef, ShardRef } from './manifest.js';
import { mainThreadHashing, type Hashing, type ShardHash } from './shard-hash.js';

/**
 * Appends a blob's bytes and cuts them into shards of at most `shardBytes`, each stored once
 * under its sha256 (an existing identical shard is reused). Tensors may span shards.
 */
export class ShardWriter {
  private readonly shards: ShardRef[] = [];
  private readonly tensors: Record<string, number> = {};
  /** bytes written so far; tensors get their offsets from it */
  private position = 0;
  private file: { handle: FileHandle; path: string; hash: ShardHash; bytes: number } | undefined;

  /**
   * `pieceBytes`: also hash each shard's pieces as they are written (0: shards without pieces);
   * `hashing`: where the hashes are computed (hashing threads, or this thread)
   */
  constructor(
    private readonly shardsDir: string,
    private readonly shardBytes = DEFAULT_SHARD_BYTES,
    private readonly pieceBytes = 0,
    private readonly hashing: Hashing = mainThreadHashing,
  ) {}

  async addTensor(name: string, bytes: Uint8Array): Promise<void> {
    this.tensors[name] = this.position;
    await this.write(bytes);
  }

  async write(bytes: Uint8Array): Promise<void> {
    let at = 0;
    while (at < bytes.length) {
      if (!this.file) {
        const path = join(this.shardsDir, `.tmp-${randomBytes(8).toString('hex')}`);
        this.file = { handle: await open(path, 'w'), path, hash: this.hashing.shard(this.pieceBytes), bytes: 0 };
      }
      const f = this.file;
      const n = Math.min(bytes.length - at, this.shardBytes - f.bytes);
      const part = bytes.subarray(at, at + n);
      // written and hashed side by side; both done before the caller may reuse `bytes`
      await settleBoth(f.handle.write(part, 0, part.length), f.hash.update(part));
      f.bytes += n;
      this.position += n;
      at += n;
      if (f.bytes === this.shardBytes) await this.cut();
    }
  }

  private async cut(): Promise<void> {
    const f = this.file;
    if (!f) return;
    // `file` stays set until the shard has its name: where closing or hashing fails, abort() removes it
    await f.handle.close();
    const { sha256, pieces } = await f.hash.digest();
    this.file = undefined;
    const final = join(this.shardsDir, sha256);
    const exists = await stat(final).then(
      (s) => s.size === f.bytes,
      () => false,
    );
    if (exists) await rm(f.path);
    else await rename(f.path, final);
    const ref: ShardRef = { sha256, offset: this.position - f.bytes, bytes: f.bytes };
    if (pieces) Object.assign(ref, { pieceBytes: this.pieceBytes, pieces });
    this.shards.push(ref);
  }

  async finish(): Promise<BlobRef> {
    await this.cut();
    return { bytes: this.position, shards: this.shards, tensors: this.tensors };
  }

  /** Removes a half-written shard after a failure. */
  async abort(): Promise<void> {
    const f = this.file;
    this.file = undefined;
    if (f) {
      f.hash.discard();
      await f.handle.close().catch(() => undefined);
      await rm(f.path, { force: true });
    }
  }
}

/** Waits for both (a write is never left in flight behind a failed hash), then throws the first failure. */
async function settleBoth(a: Promise<unknown>, b: Promise<unknown>): Promise<void> {
  const [x, y] = await Promise.allSettled([a, b]);
  if (x.status === 'rejected') throw x.reason;
  if (y.status === 'rejected') throw y.reason;
}
