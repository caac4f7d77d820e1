import { createHash } from 'node:crypto';
import { open, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  CLIENT_OPTIONS,
  DEFAULT_FETCH_TIMEOUT_MS,
  formatBytes,
  grpc,
  grpcClientCredentials,
  Bitfield,
  type Logger,
  OptimerError,
  type PieceList,
  pieceClientOptions,
  pieceRange,
  type Seeder,
  ShardServiceClient,
  silentLogger,
} from '../../shared/index.js';
import { CacheSpace, type CacheUsage } from './cache-space.js';
import { fetchPieces, HolderBusy, type PieceStats } from './pieces.js';
import type { PeerTracker } from './holders.js';
import { peersText, type Transfer, Transfers, type TransferView } from './transfers.js';

export interface BlobCacheOptions {
  /**
   * the most the folder may hold, bytes (blobs, partial and temporary files); least recently
   * used blobs are evicted first, pinned ones never (default: no limit)
   */
  limitBytes?: number;
  log?: Logger;
}

/**
 * A content-addressed cache of blobs (shards, manifests, evaluation sets) in one folder, each
 * file named by its sha256. A blob enters the cache only after its bytes hash to its name;
 * concurrent requests for the same blob share one download. With a limit, room is made before
 * each download by evicting the least recently used blobs that nobody has pinned.
 */
export class BlobCache {
  private readonly inflight = new Map<string, Promise<void>>();
  private readonly clients = new Map<string, grpc.Client>();
  /** transfers under way: close() cancels them (a closing worker stops fetching) */
  private readonly calls = new Set<grpc.ClientReadableStream<unknown>>();
  /** where this cache's blobs are served to peers and announced (absent: a plain fetcher) */
  private sharing: { seeder: Seeder; tracker: PeerTracker } | undefined;
  private readonly closing = new AbortController();
  /** counts of piece transfers, for tests and progress */
  readonly stats: PieceStats = { pieces: 0, resumed: 0, corrupt: 0, failed: 0, busy: 0, fromPeers: 0, fromSeeders: 0 };
  private readonly space: CacheSpace;
  private readonly transfers = new Transfers();
  private readonly log: Logger;

  constructor(
    readonly dir: string,
    private readonly fetchTimeoutMs = DEFAULT_FETCH_TIMEOUT_MS,
    /**
     * who fills this cache (a worker id): processes sharing one cache folder (`optimer run`'s
     * local workers) each keep their own partial files, named by it, so one never writes into
     * or removes another's; a restarted worker with the same id resumes its own
     */
    private readonly owner = '',
    options: BlobCacheOptions = {},
  ) {
    this.log = options.log ?? silentLogger();
    this.space = new CacheSpace(dir, options.limitBytes ?? Number.POSITIVE_INFINITY, this.log, (sha) => this.forget(sha));
  }

  /** Counts what the folder holds already (call once before use; a cache not opened counts only what it adds). */
  open(): Promise<void> {
    return this.space.scan();
  }

  /** The limit in bytes (Infinity: none). */
  get limitBytes(): number {
    return this.space.limitBytes;
  }

  /** Keeps these blobs from eviction (in use: a study kept ready) until the returned function is called. */
  pin(sha256s: Iterable<string>): () => void {
    const releases = [...new Set(sha256s)].map((sha) => this.space.pin(sha));
    return () => {
      for (const r of releases) r();
    };
  }

  /** Marks blobs used now (eviction takes the least recently used first). */
  touch(sha256s: Iterable<string>): void {
    for (const sha of sha256s) this.space.touch(sha);
  }

  /** Bytes held, the limit, blob count, what is pinned and what was evicted. */
  usage(): CacheUsage {
    return this.space.usage();
  }

  /** The transfers under way. */
  transferViews(): TransferView[] {
    return this.transfers.list();
  }

  path(sha256: string): string {
    return join(this.dir, sha256);
  }

  async has(sha256: string, bytes: number): Promise<boolean> {
    return stat(this.path(sha256)).then(
      (s) => s.size === bytes,
      () => false,
    );
  }

  /**
   * Serves what the cache holds through `seeder` and announces it to `tracker`; blobs with
   * pieces are then fetched from peers first, the seeders given to `ensure` as the last resort.
   */
  share(seeder: Seeder, tracker: PeerTracker): void {
    this.sharing = { seeder, tracker };
  }

  /**
   * Makes sure the blob is in the cache. With `pieces` it is fetched piece by piece from peers
   * and seeders at once (resuming a partial file); without, whole from the first seeder that has it.
   */
  async ensure(sha256: string, bytes: number, seeders: readonly string[], pieces?: PieceList): Promise<string> {
    // pinned while it is looked at or fetched: an eviction pass for another blob leaves it alone
    const unpin = this.space.pin(sha256);
    try {
      await this.space.settled(); // a pass that started before the pin is done deleting
      if (!(await this.has(sha256, bytes))) {
        let p = this.inflight.get(sha256);
        if (!p) {
          p = this.fetch(sha256, bytes, seeders, pieces).finally(() => this.inflight.delete(sha256));
          this.inflight.set(sha256, p);
        }
        await p;
      }
      this.space.track(sha256, bytes); // known from now on, if it was not (a folder shared with other workers)
      this.space.touch(sha256);
      this.serve(sha256, pieces);
      return this.path(sha256);
    } finally {
      unpin();
    }
  }

  /** Makes room, fetches, and says so: size, seconds, rate, how much came from peers. */
  private async fetch(sha256: string, bytes: number, seeders: readonly string[], pieces: PieceList | undefined): Promise<void> {
    await this.space.makeRoom(sha256, bytes);
    const blob = sha256.slice(0, 12);
    const t = this.transfers.start(sha256, bytes);
    this.log.info(
      { blob, bytes, pieces: pieces?.pieces.length ?? 0 },
      `fetching blob ${blob} (${formatBytes(bytes)}${pieces ? `, ${pieces.pieces.length} pieces` : ', whole'})`,
    );
    try {
      await (pieces ? this.downloadPieces(sha256, bytes, seeders, pieces, t) : this.download(sha256, bytes, seeders, t));
    } catch (e) {
      const v = t.view();
      this.log.info(
        { blob, bytes, doneBytes: v.doneBytes, seconds: v.seconds, err: (e as Error).message },
        `blob ${blob}: transfer stopped at ${formatBytes(v.doneBytes)} of ${formatBytes(bytes)} after ${v.seconds.toFixed(1)} s`,
      );
      throw e;
    } finally {
      this.transfers.end(t);
    }
    const v = t.view();
    const resumed = v.doneBytes - v.fromPeers - v.fromSeeders;
    this.log.info(
      {
        blob,
        bytes,
        seconds: v.seconds,
        bytesPerSecond: v.bytesPerSecond,
        fromPeers: v.fromPeers,
        fromSeeders: v.fromSeeders,
        peers: v.peers,
        resumedBytes: resumed,
      },
      `fetched blob ${blob}: ${formatBytes(bytes)} in ${v.seconds.toFixed(2)} s (${formatBytes(v.bytesPerSecond)}/s), ` +
        (v.peers > 0 ? `${formatBytes(v.fromPeers)} from ${peersText(v.peers)}, ` : '') +
        `${formatBytes(v.fromSeeders)} from the coordinator` +
        (resumed > 0 ? `, ${formatBytes(resumed)} resumed from a partial file` : ''),
    );
  }

  /** An evicted blob is no longer served nor announced: peers stop asking this worker for it. */
  private forget(sha256: string): void {
    this.sharing?.seeder.unregister(sha256);
    this.sharing?.tracker.withdraw(sha256);
  }

  /** A complete blob is served, and announced when it has pieces (peers fetch only those). */
  private serve(sha256: string, pieces: PieceList | undefined): void {
    if (!this.sharing) return;
    this.sharing.seeder.register(sha256, this.path(sha256));
    if (pieces) this.sharing.tracker.announce(sha256, Bitfield.full(pieces.pieces.length));
  }

  private async downloadPieces(
    sha256: string,
    bytes: number,
    seeders: readonly string[],
    pieces: PieceList,
    transfer: Transfer,
  ): Promise<void> {
    const partName = `.part-${sha256}${this.owner ? `-${createHash('sha256').update(this.owner).digest('hex').slice(0, 12)}` : ''}`;
    const part = join(this.dir, partName);
    const sharing = this.sharing;
    let seedingNow: Bitfield | undefined;
    const stopFollowing = sharing ? await sharing.tracker.follow(sha256).catch(() => () => undefined) : () => undefined;
    try {
      await fetchPieces({
        sha256,
        bytes,
        pieces,
        path: part,
        seeders,
        ...(sharing && { self: sharing.seeder.address }),
        tracker: sharing?.tracker,
        stats: this.stats,
        signal: this.closing.signal,
        fetchRange: (address, offset, length, signal) => this.fetchRange(address, sha256, offset, length, pieces.pieceBytes, signal),
        // pieces are served as soon as they are verified: peers need not wait for the whole blob
        onStart: (have, seeding) => {
          seedingNow = seeding;
          this.space.track(partName, bytes); // created at the blob's full size
          for (let i = 0; i < have.size; i++) if (have.has(i)) transfer.resumed(pieceRange(i, bytes, pieces.pieceBytes).length);
          sharing?.seeder.registerPartial(sha256, part, bytes, pieces.pieceBytes, have);
          // announced even when empty: peers that see each other fetching ask the seeders less
          sharing?.tracker.announce(sha256, have, seeding);
        },
        onPiece: (have, got) => {
          transfer.got(got.bytes, got);
          sharing?.tracker.announce(sha256, have, seedingNow);
        },
        onSeeding: (have, seeding) => sharing?.tracker.announce(sha256, have, seeding),
      });
      // every piece matched its hash in the manifest, which is itself verified by its sha256:
      // the blob is what the manifest describes, with no second pass over it (`pool inspect
      // --verify` checks that a pool's piece lists and shard names agree)
      await rename(part, this.path(sha256));
      this.space.untrack(partName);
    } catch (e) {
      // the partial file stays for a later resume, but is neither served nor announced meanwhile
      this.forget(sha256);
      throw e;
    } finally {
      stopFollowing();
    }
  }

  /** One range of a blob from one holder, chunk by chunk as it arrives. */
  private async *fetchRange(
    address: string,
    sha256: string,
    offset: number,
    length: number,
    pieceBytes: number,
    signal: AbortSignal,
  ): AsyncGenerator<Uint8Array> {
    // a connection of its own with a window of half a piece: the holder's upload slot then binds,
    // and a few peers sending into one slow link overflow its queue less (measured: half the
    // TCP timeouts and a quarter of the retransmissions of the 64 MiB window at 5 Mbit/s)
    const client = this.client(address, pieceBytes) as grpc.Client & {
      fetch(req: unknown, opts: unknown): grpc.ClientReadableStream<{ data: Buffer }>;
    };
    const call = client.fetch({ sha256, offset, length }, { deadline: Date.now() + this.fetchTimeoutMs });
    this.calls.add(call);
    const cancel = () => call.cancel();
    signal.addEventListener('abort', cancel, { once: true });
    try {
      for await (const chunk of call as AsyncIterable<{ data: Buffer }>) yield chunk.data;
    } catch (e) {
      // the holder's own answer (Seeder: every upload slot taken), not an oversized message
      const { code, details } = e as { code?: number; details?: string };
      if (code === grpc.status.RESOURCE_EXHAUSTED && details?.startsWith('busy')) throw new HolderBusy(details);
      throw e;
    } finally {
      // a consumer that stops early (too many bytes, an error) ends the call too
      call.cancel();
      signal.removeEventListener('abort', cancel);
      this.calls.delete(call);
    }
  }

  private async download(sha256: string, bytes: number, seeders: readonly string[], transfer: Transfer): Promise<void> {
    const errors: string[] = [];
    for (const address of seeders) {
      try {
        await this.fetchFrom(address, sha256, bytes, transfer);
        return;
      } catch (e) {
        errors.push(`${address}: ${(e as Error).message}`);
      }
    }
    throw new OptimerError('TRANSPORT', `blob ${sha256}: no seeder delivered it (${errors.join('; ') || 'no seeders'})`, {
      retryable: true,
    });
  }

  /** The client for whole blobs, or (`pieceBytes`) for pieces of that size. */
  private client(address: string, pieceBytes?: number): grpc.Client {
    const key = pieceBytes === undefined ? address : `${address} ${pieceBytes}`;
    let c = this.clients.get(key);
    if (!c) {
      const options = pieceBytes === undefined ? CLIENT_OPTIONS : pieceClientOptions(pieceBytes);
      c = new ShardServiceClient(address, grpcClientCredentials(), options);
      this.clients.set(key, c);
    }
    return c;
  }

  private async fetchFrom(address: string, sha256: string, bytes: number, transfer: Transfer): Promise<void> {
    const tmpName = `.tmp-${sha256.slice(0, 16)}-${randomBytes(6).toString('hex')}`;
    const tmp = join(this.dir, tmpName);
    const fh = await open(tmp, 'w');
    this.space.track(tmpName, bytes); // counted at the size it is growing to
    let fetched = 0;
    const hash = createHash('sha256');
    let got = 0;
    let call: grpc.ClientReadableStream<{ data: Buffer }> | undefined;
    try {
      const client = this.client(address) as grpc.Client & {
        fetch(req: unknown, opts: unknown): grpc.ClientReadableStream<{ data: Buffer }>;
      };
      call = client.fetch({ sha256, offset: 0 }, { deadline: Date.now() + this.fetchTimeoutMs });
      this.calls.add(call);
      for await (const chunk of call as AsyncIterable<{ data: Buffer }>) {
        got += chunk.data.length;
        if (got > bytes) {
          call.cancel();
          throw new Error(`more than the ${bytes} bytes announced`);
        }
        hash.update(chunk.data);
        await fh.write(chunk.data);
        transfer.got(chunk.data.length, { seeder: true, address });
        fetched += chunk.data.length;
      }
      await fh.close();
      const digest = hash.digest('hex');
      if (got !== bytes || digest !== sha256)
        throw new Error(
          `received ${got} bytes hashing to ${digest.slice(0, 12)}…, expected ${bytes} bytes hashing to ${sha256.slice(0, 12)}…`,
        );
      await rename(tmp, this.path(sha256));
    } catch (e) {
      await fh.close().catch(() => undefined);
      await rm(tmp, { force: true });
      // a failed attempt's bytes do not count towards the transfer: the next seeder starts over
      transfer.discard(fetched);
      throw e;
    } finally {
      this.space.untrack(tmpName);
      if (call) this.calls.delete(call);
    }
  }

  close(): void {
    this.closing.abort();
    for (const call of this.calls) call.cancel();
    this.calls.clear();
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}
