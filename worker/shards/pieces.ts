import { createHash } from 'node:crypto';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { Bitfield, OptimerError, pieceRange, pickRarest, type PieceList } from '../../shared/index.js';
import type { PeerTracker } from './holders.js';

/** Streams at once per blob: enough to fill a link from several peers, few enough to keep pieces whole. */
export const MAX_STREAMS_PER_BLOB = 4;
/**
 * Streams a worker keeps while it holds more pieces than the peers still fetching (by more than
 * AHEAD_PIECES on average): it leaves the holders' upload slots to those behind, so that the last
 * to finish is not far behind the first (measured at 5 Mbit/s: the first and last of 16 workers
 * finished 8 s apart, a fifth of the whole).
 */
export const STREAMS_WHEN_AHEAD = 2;
const AHEAD_PIECES = 2;
/** How long an idle stream waits for a holder to appear before looking again, ms. */
const WAIT_FOR_HOLDERS_MS = 200;
/** Failed requests after which a seeder (the last resort) is dropped too; a peer goes at its first. */
const SEEDER_FAILURES = 3;
/** How long a holder that said it is busy (every upload slot taken) is left alone, ms (±50%, so askers spread out). */
const BUSY_BACKOFF_MS = 200;
/**
 * A piece request that receives no byte for this long is cancelled and its holder treated as
 * failed, ms: a hung peer (stopped process, dead link) would otherwise hold the piece and a
 * stream until the call's own deadline, minutes later.
 */
const STALL_MS = 30_000;
/** Busy answers in a row after which a peer is dropped (one that never serves would otherwise hold its pieces back for ever). */
const PEER_BUSY_LIMIT = 50;

/** A holder turned the request away because all its upload slots were taken: not a failure, ask again later. */
export class HolderBusy extends Error {}

export interface PieceStats {
  /** pieces fetched and verified */
  pieces: number;
  /** pieces found verified in a partial file at start (not fetched again) */
  resumed: number;
  /** pieces whose bytes did not match their hash (their holder was dropped) */
  corrupt: number;
  /** requests that failed (their holder was dropped) */
  failed: number;
  /** requests a holder turned away as busy (asked again later, or of another holder) */
  busy: number;
  /** bytes of verified pieces from peers and from the announced seeders */
  fromPeers: number;
  fromSeeders: number;
}

export interface FetchPiecesOptions {
  sha256: string;
  bytes: number;
  pieces: PieceList;
  /** the partial file: pieces are written in place, at their offsets */
  path: string;
  /** the study's seeders (the coordinator): they hold everything, and are asked last */
  seeders: readonly string[];
  /** the address this worker serves its pieces at, when it does: it ranks the worker among the blob's holders */
  self?: string;
  /** how long a busy holder is left alone, ms (default BUSY_BACKOFF_MS; tests shorten it) */
  busyBackoffMs?: number;
  /** a request with no byte for this long is given up, ms (default STALL_MS; tests shorten it) */
  stallMs?: number;
  tracker: PeerTracker | undefined;
  stats: PieceStats;
  signal: AbortSignal;
  /** the bytes of one range from one holder, as they arrive (the caller checks how many came) */
  fetchRange(address: string, offset: number, length: number, signal: AbortSignal): AsyncIterable<Uint8Array>;
  /** the fetch starts, holding `have`; `seeding` will mark the pieces asked of the seeders while they are */
  onStart(have: Bitfield, seeding: Bitfield): void;
  /** a verified piece was written: `bytes` long, from `address` (one of `seeders`, or a peer) */
  onPiece(have: Bitfield, got: { bytes: number; address: string; seeder: boolean }): void;
  /** a piece was asked of the seeders, or that request ended (`seeding` changed) */
  onSeeding(have: Bitfield, seeding: Bitfield): void;
}

/**
 * Fetches a blob's missing pieces into `path`, up to MAX_STREAMS_PER_BLOB at once (STREAMS_WHEN_AHEAD
 * while ahead of the peers): from a peer picked at random among those holding a piece it wants, the
 * rarest of those, and from the seeders only the pieces no peer holds, with one
 * stream to them while any peer is known. The seeders' upload is the scarcest link, so each
 * piece should leave them once: workers that see each other split those pieces by their rank
 * among the blob's holders (piece i is first asked by the worker ranked i mod holders) and pass
 * them on. Each piece is checked against its hash before it is marked held; a holder that fails
 * or sends a corrupt piece is dropped for this blob and its piece asked of another, the seeders
 * last (a seeder only after SEEDER_FAILURES failed requests, or at once for a corrupt piece); a
 * holder that is busy is left alone for a moment. Pieces already verified in `path` (an
 * interrupted transfer) are kept. Resolves when every piece is held.
 */
export async function fetchPieces(o: FetchPiecesOptions): Promise<void> {
  const { pieceBytes, pieces } = o.pieces;
  const n = pieces.length;
  const { fh, fresh } = await openPartial(o.path, o.bytes);
  try {
    // a file just created holds nothing: hashing its zeros would cost a pass over the blob
    const have = fresh ? new Bitfield(n) : await verifiedPieces(fh, o.bytes, o.pieces);
    o.stats.resumed += have.count;
    const seeding = new Bitfield(n);
    o.onStart(have, seeding);
    const inFlight = new Set<number>();
    /** holders dropped for this blob, with why */
    const dropped = new Map<string, string>();
    const failures = new Map<string, number>();
    const streams = new Map<string, number>();
    /** holders that said they were busy, until when (ms since the epoch) */
    const busyUntil = new Map<string, number>();
    const busyInARow = new Map<string, number>();
    // every idle lane is woken when a piece lands or the holders change, not only the last to wait
    const waiting = new Set<() => void>();
    const poke = () => {
      for (const w of waiting) w();
    };
    o.tracker?.onChange(poke);

    const wanted = function* () {
      for (let i = 0; i < n; i++) if (!have.has(i) && !inFlight.has(i)) yield i;
    };
    /** the next piece and who to ask, or undefined when nothing can be asked now */
    const next = (): { piece: number; address: string; seeder: boolean } | undefined => {
      const now = Date.now();
      const free = (address: string) => (busyUntil.get(address) ?? 0) <= now;
      const known = (o.tracker?.holders(o.sha256) ?? []).filter((h) => !dropped.has(h.address));
      const toSeeders = [...streams].filter(([a]) => o.seeders.includes(a)).reduce((t, [, c]) => t + c, 0);
      const fromSeeders = () => {
        const seeders = o.seeders.filter((s) => !dropped.has(s) && free(s));
        if (seeders.length === 0 || (known.length > 0 && toSeeders >= 1)) return undefined;
        // what a peer holds (even a busy one) is passed on by peers, and what a peer is fetching
        // from the seeders will be: neither is asked of the seeders again
        const left = [...wanted()].filter((i) => !known.some((h) => h.have.has(i) || h.seeding?.has(i)));
        if (left.length === 0) return undefined;
        const ring = [o.self ?? '', ...known.map((h) => h.address)].sort();
        const rank = ring.indexOf(o.self ?? '');
        const mine = left.filter((i) => i % ring.length === rank);
        const from = mine.length > 0 ? mine : left;
        return { piece: from[Math.floor(Math.random() * from.length)]!, address: seeders[0]!, seeder: true };
      };
      // the seeders' stream first: it must never idle while pieces no peer holds are left
      const seeded = toSeeders === 0 ? fromSeeders() : undefined;
      if (seeded) return seeded;
      // a holder first, at random among those with a piece wanted (the fewest of our streams
      // first), then the rarest piece it has: the rarest piece overall sent every asker to the
      // few holders of the newest pieces while others had nothing to send (measured at 5 Mbit/s:
      // a worker had no upload 27% of the time, while others turned askers away)
      const want = [...wanted()];
      const useful = known.filter((h) => free(h.address) && want.some((i) => h.have.has(i)));
      if (useful.length > 0) {
        const least = Math.min(...useful.map((h) => streams.get(h.address) ?? 0));
        const idle = useful.filter((h) => (streams.get(h.address) ?? 0) === least);
        const holder = idle[Math.floor(Math.random() * idle.length)]!;
        const piece = pickRarest(
          want.filter((i) => holder.have.has(i)),
          known.map((h) => h.have),
          Math.random,
        );
        return { piece, address: holder.address, seeder: false };
      }
      return fromSeeders();
    };

    const ahead = (): boolean => {
      const fetching = (o.tracker?.holders(o.sha256) ?? []).filter((h) => !h.have.complete && !dropped.has(h.address));
      if (fetching.length === 0) return false;
      return have.count > fetching.reduce((t, h) => t + h.have.count, 0) / fetching.length + AHEAD_PIECES;
    };

    const lane = async (_: unknown, index: number): Promise<void> => {
      while (!have.complete) {
        o.signal.throwIfAborted();
        const job = index >= STREAMS_WHEN_AHEAD && ahead() ? undefined : next();
        if (!job) {
          // with the seeders gone, peers still fetching could help, but nothing bounds that wait
          if (inFlight.size === 0 && o.seeders.every((s) => dropped.has(s)))
            throw new OptimerError(
              'TRANSPORT',
              `blob ${o.sha256}: no holder delivered it (${[...dropped].map(([a, why]) => `${a}: ${why}`).join('; ') || 'no holders'})`,
              {
                retryable: true,
              },
            );
          if ([...wanted()].length === 0 && inFlight.size === 0) return;
          await new Promise<void>((resolve) => {
            const done = () => {
              clearTimeout(t);
              waiting.delete(done);
              resolve();
            };
            // or until the first busy holder may be asked again, if sooner
            const now = Date.now();
            const freeAt = Math.min(...[...busyUntil.values()].filter((u) => u > now));
            const t = setTimeout(done, Math.max(1, Math.min(WAIT_FOR_HOLDERS_MS, freeAt - now)));
            waiting.add(done);
          });
          continue;
        }
        const { piece, address } = job;
        const { offset, length } = pieceRange(piece, o.bytes, pieceBytes);
        // this request alone is cancelled when it stalls; all of them when the fetch is
        const request = new AbortController();
        const cancel = () => request.abort(o.signal.reason);
        o.signal.addEventListener('abort', cancel, { once: true });
        inFlight.add(piece);
        streams.set(address, (streams.get(address) ?? 0) + 1);
        if (job.seeder) {
          seeding.set(piece);
          o.onSeeding(have, seeding);
        }
        try {
          // each chunk is hashed and written at its place as it arrives: no piece-sized copy in
          // memory; a piece that fails its hash is simply not marked held, and its bytes are
          // overwritten by the next holder's
          const hash = createHash('sha256');
          let got = 0;
          const stallMs = o.stallMs ?? STALL_MS;
          const stalled = () => request.abort(new Error(`no byte for ${stallMs / 1000} s after ${got} of ${length}`));
          let timer = setTimeout(stalled, stallMs);
          try {
            for await (const chunk of o.fetchRange(address, offset, length, request.signal)) {
              clearTimeout(timer);
              timer = setTimeout(stalled, stallMs);
              if (got + chunk.length > length) throw new Error(`more than the ${length} bytes asked for`);
              hash.update(chunk);
              await fh.write(chunk, 0, chunk.length, offset + got);
              got += chunk.length;
            }
          } catch (e) {
            // the holder's fault when it stalled, not whatever the cancelled call threw
            throw request.signal.aborted && !o.signal.aborted ? request.signal.reason : e;
          } finally {
            clearTimeout(timer);
          }
          if (got !== length) throw new Error(`${got} of ${length} bytes arrived`);
          const digest = hash.digest('hex');
          if (digest !== pieces[piece]) {
            o.stats.corrupt++;
            dropped.set(address, `piece ${piece} hashing to ${digest.slice(0, 12)}…, expected ${pieces[piece]!.slice(0, 12)}…`);
            continue;
          }
          have.set(piece);
          busyInARow.delete(address);
          o.stats.pieces++;
          if (job.seeder) o.stats.fromSeeders += length;
          else o.stats.fromPeers += length;
          o.onPiece(have, { bytes: length, address, seeder: job.seeder });
        } catch (e) {
          if (o.signal.aborted) throw e;
          if (e instanceof HolderBusy) {
            o.stats.busy++;
            busyUntil.set(address, Date.now() + (o.busyBackoffMs ?? BUSY_BACKOFF_MS) * (0.5 + Math.random()));
            const times = (busyInARow.get(address) ?? 0) + 1;
            busyInARow.set(address, times);
            if (!job.seeder && times >= PEER_BUSY_LIMIT) dropped.set(address, `busy ${times} times in a row`);
            continue;
          }
          o.stats.failed++;
          const times = (failures.get(address) ?? 0) + 1;
          failures.set(address, times);
          if (!job.seeder || times >= SEEDER_FAILURES) dropped.set(address, (e as Error).message);
        } finally {
          o.signal.removeEventListener('abort', cancel);
          inFlight.delete(piece);
          if (job.seeder) {
            seeding.clear(piece);
            o.onSeeding(have, seeding);
          }
          streams.set(address, streams.get(address)! - 1);
          poke();
        }
      }
    };
    // every lane has stopped before the file is closed (none writes into a closed handle)
    const ends = await Promise.allSettled(Array.from({ length: Math.min(MAX_STREAMS_PER_BLOB, n) }, lane));
    const failed = ends.find((e) => e.status === 'rejected');
    if (failed) throw failed.reason;
  } finally {
    await fh.close();
  }
}

/** Opens (or creates) the partial file at its full size, so pieces can be written anywhere. */
async function openPartial(path: string, bytes: number): Promise<{ fh: FileHandle; fresh: boolean }> {
  const exists = await stat(path).then(
    () => true,
    () => false,
  );
  const fh = await open(path, exists ? 'r+' : 'w+');
  if ((await fh.stat()).size !== bytes) await fh.truncate(bytes);
  return { fh, fresh: !exists };
}

/** Re-hashes what a partial file holds: pieces whose bytes match their hash need not be fetched again. */
async function verifiedPieces(fh: FileHandle, bytes: number, list: PieceList): Promise<Bitfield> {
  const have = new Bitfield(list.pieces.length);
  const buf = Buffer.allocUnsafe(list.pieceBytes);
  for (let i = 0; i < list.pieces.length; i++) {
    const { offset, length } = pieceRange(i, bytes, list.pieceBytes);
    const { bytesRead } = await fh.read(buf, 0, length, offset);
    if (bytesRead !== length) continue;
    // a hole of zeros hashes to something else (unless the piece is zeros, which is then right)
    if (createHash('sha256').update(buf.subarray(0, length)).digest('hex') === list.pieces[i]) have.set(i);
  }
  return have;
}
