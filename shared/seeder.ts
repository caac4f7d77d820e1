import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { CHUNK_BYTES, grpc, MAX_REQUEST_BYTES, shardServiceDefinition } from './grpc.js';
import type { Logger } from './logging.js';
import { grpcServerCredentials } from './tls.js';
import type { Bitfield } from './pieces.js';

/**
 * How long after turning an asker away a seeder keeps its slots one per asker, ms: longer than
 * the askers' backoff (pieces.ts, 100–300 ms), so the ones waiting it out are still counted.
 */
const FAIR_MS = 1000;

type FetchCall = grpc.ServerWritableStream<{ sha256: string; offset: number; length: number }, { data: Uint8Array }>;

/** A blob still arriving: only the ranges whose pieces are verified may be served. */
interface PartialBlob {
  path: string;
  bytes: number;
  pieceBytes: number;
  have: Bitfield;
}

/** What a seeder has served: bytes, requests, and how often each (sha256, offset, length) range. */
export interface ServedCounters {
  bytes: number;
  requests: number;
  /** range requests turned away because every upload slot was taken */
  busy: number;
  /** key `<sha256>:<offset>:<length>` (length as sent) → times served in full */
  ranges: Map<string, number>;
}

/**
 * Serves content-addressed blobs (pool shards, the manifest, evaluation sets) over gRPC, whole or
 * by range. Only registered hashes are served: a request is a hash, never a path. In shared/
 * because both sides serve: the coordinator its pool, and each worker its cache (complete blobs,
 * and the verified pieces of blobs it is still fetching) to its peers.
 */
export class Seeder {
  private readonly blobs = new Map<string, string>();
  private readonly partials = new Map<string, PartialBlob>();
  private server: grpc.Server | undefined;
  private readonly counters: ServedCounters = { bytes: 0, requests: 0, busy: 0, ranges: new Map() };
  /** range requests being streamed now */
  private uploading = 0;
  /** slots held per asker (its connection) */
  private readonly byAsker = new Map<string, number>();
  /** when an asker was last turned away because every slot was taken, ms since the epoch */
  private lastRefused = 0;
  address = '';

  /**
   * `uploadSlots`: range requests (pieces) streamed at once; more are refused at once with
   * RESOURCE_EXHAUSTED (`busy: …`), and the asker tries another holder or comes back, as with
   * BitTorrent's upload slots. A slot is held until the piece's last chunk has been sent as far as
   * the asker's flow-control window lets it: piece requests use a window of half a piece
   * (pieceClientOptions), so a slot is held until the piece is at least half delivered, and few
   * slots send few pieces at a time at the uplink's full rate (a 64 MiB window would let every
   * piece be handed over at once). Whole-blob requests are not limited.
   *
   * An asker that holds a slot gets no second one while others were turned away in the last
   * `fairMs`: a worker that asks before it knows its peers sends several requests at once, and
   * its lanes come back the moment a slot frees while the others wait out their backoff, so one
   * worker could keep every slot and get every fresh piece (measured: the others received almost
   * nothing for 10 s). Alone, an asker may take every slot.
   */
  constructor(
    private readonly log: Logger,
    private readonly uploadSlots = Number.POSITIVE_INFINITY,
    private readonly fairMs = FAIR_MS,
  ) {}

  register(sha256: string, path: string): void {
    this.partials.delete(sha256);
    this.blobs.set(sha256, path);
  }

  /** Serves the pieces of a blob being fetched as `have` marks them verified (it is read live). */
  registerPartial(sha256: string, path: string, bytes: number, pieceBytes: number, have: Bitfield): void {
    if (this.blobs.has(sha256)) return;
    this.partials.set(sha256, { path, bytes, pieceBytes, have });
  }

  unregister(sha256: string): void {
    this.blobs.delete(sha256);
    this.partials.delete(sha256);
  }

  /** Range requests (pieces) being streamed now. */
  get uploads(): number {
    return this.uploading;
  }

  /** What this seeder has served so far (a copy). */
  served(): ServedCounters {
    return { ...this.counters, ranges: new Map(this.counters.ranges) };
  }

  async start(host: string, port = 0, advertiseHost?: string): Promise<string> {
    const server = new grpc.Server({ 'grpc.max_receive_message_length': MAX_REQUEST_BYTES });
    server.addService(shardServiceDefinition, { fetch: (call: FetchCall) => void this.fetch(call) });
    const bound = await new Promise<number>((resolve, reject) => {
      server.bindAsync(`${host.includes(':') ? `[${host}]` : host}:${port}`, grpcServerCredentials(), (err, p) =>
        err ? reject(err) : resolve(p),
      );
    });
    this.server = server;
    this.address = `${advertiseHost ?? host}:${bound}`;
    return this.address;
  }

  private async fetch(call: FetchCall): Promise<void> {
    const { sha256, offset, length } = call.request;
    const fail = (code: grpc.status, details: string): void => {
      call.emit('error', { code, details });
    };
    if (typeof sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(sha256))
      return fail(grpc.status.INVALID_ARGUMENT, 'sha256: expected a lowercase hex sha256');
    const partial = this.partials.get(sha256);
    const path = this.blobs.get(sha256) ?? partial?.path;
    if (!path) return fail(grpc.status.NOT_FOUND, `blob ${sha256} is not served here`);
    let size: number;
    try {
      size = partial ? partial.bytes : (await stat(path)).size;
    } catch {
      return fail(grpc.status.NOT_FOUND, `blob ${sha256} is missing on the seeder`);
    }
    if (!Number.isSafeInteger(offset) || offset < 0 || offset > size)
      return fail(grpc.status.OUT_OF_RANGE, `offset ${offset} outside a blob of ${size} bytes`);
    if (!Number.isSafeInteger(length) || length < 0 || offset + length > size)
      return fail(grpc.status.OUT_OF_RANGE, `range ${offset}+${length} runs past the end of a blob of ${size} bytes`);
    const end = length === 0 ? size : offset + length;
    if (partial && !partial.have.covers(offset, end - offset, partial.pieceBytes))
      return fail(grpc.status.UNAVAILABLE, `blob ${sha256}: bytes ${offset}..${end} are not all verified here yet`);
    const ranged = length > 0;
    const asker = call.getPeer();
    const held = this.byAsker.get(asker) ?? 0;
    const full = this.uploading >= this.uploadSlots;
    if (ranged && (full || (held > 0 && Date.now() - this.lastRefused < this.fairMs))) {
      if (full) this.lastRefused = Date.now();
      this.counters.busy++;
      const why = full ? `${this.uploading} uploads at once` : 'one upload per asker while others wait';
      return fail(grpc.status.RESOURCE_EXHAUSTED, `busy: ${why}; ask another holder or come back`);
    }
    this.counters.requests++;
    if (end === offset) {
      this.count(sha256, offset, length);
      call.end();
      return;
    }
    if (ranged) {
      this.uploading++;
      this.byAsker.set(asker, held + 1);
    }
    const stream = createReadStream(path, { start: offset, end: end - 1, highWaterMark: CHUNK_BYTES });
    let cancelled = false;
    // a cancelled call may never drain: a write waiting for it is woken, or its slot would stay taken
    let wake: (() => void) | undefined;
    call.on('cancelled', () => {
      cancelled = true;
      stream.destroy();
      wake?.();
    });
    const drained = () =>
      new Promise<void>((resolve) => {
        wake = () => {
          call.off('drain', wake!);
          wake = undefined;
          resolve();
        };
        call.once('drain', wake);
      });
    try {
      for await (const chunk of stream) {
        if (cancelled) break;
        this.counters.bytes += (chunk as Buffer).length;
        if (!call.write({ data: chunk as Buffer })) await drained();
      }
      if (cancelled) return;
      this.count(sha256, offset, length);
      // the slot is kept until the last chunk has left gRPC: with an asker's small window
      // (pieceClientOptions) that is when it has taken most of the piece, not when it is queued
      // (a call destroyed instead never finishes: its close, or its cancellation, frees the slot)
      await new Promise<void>((resolve) => {
        wake = resolve;
        call.once('finish', resolve);
        call.once('close', resolve);
        call.end();
      });
    } catch (e) {
      if (cancelled) return;
      this.log.warn({ sha256, err: (e as Error).message }, 'seeder: read failed');
      fail(grpc.status.INTERNAL, `reading blob ${sha256} failed`);
    } finally {
      if (ranged) {
        this.uploading--;
        const left = (this.byAsker.get(asker) ?? 1) - 1;
        if (left > 0) this.byAsker.set(asker, left);
        else this.byAsker.delete(asker);
      }
    }
  }

  private count(sha256: string, offset: number, length: number): void {
    const key = `${sha256}:${offset}:${length}`;
    this.counters.ranges.set(key, (this.counters.ranges.get(key) ?? 0) + 1);
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        s.forceShutdown();
        resolve();
      }, 2000);
      s.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
