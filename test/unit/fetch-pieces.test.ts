import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Bitfield, PieceHasher } from '../../shared/pieces.js';
import type { PeerHolder, PeerTracker } from '../../worker/shards/holders.js';
import {
  type FetchPiecesOptions,
  fetchPieces,
  HolderBusy,
  MAX_STREAMS_PER_BLOB,
  type PieceStats,
  STREAMS_WHEN_AHEAD,
} from '../../worker/shards/pieces.js';
import { useTempDir } from '../helpers/temp.js';

// The piece scheduler alone: holders are functions and a tracker in memory (the gRPC side is
// covered by test/peers.test.ts and test/transfer.test.ts).
const tmp = useTempDir('fetch-pieces');
const PIECE = 1024;
const N = 8;
const data = randomBytes(PIECE * N - 100);
const hasher = new PieceHasher(PIECE);
hasher.update(data);
const list = { pieceBytes: PIECE, pieces: hasher.finish() };
const sha256 = createHash('sha256').update(data).digest('hex');
let file = 0;

const newStats = (): PieceStats => ({ pieces: 0, resumed: 0, corrupt: 0, failed: 0, busy: 0, fromPeers: 0, fromSeeders: 0 });

/** A tracker whose holders the test sets; it tells the fetch when they change. */
class FakeTracker implements PeerTracker {
  peers: PeerHolder[] = [];
  private readonly listeners: (() => void)[] = [];
  holders(): PeerHolder[] {
    return this.peers;
  }
  async follow(): Promise<() => void> {
    return () => undefined;
  }
  announce(): void {}
  withdraw(): void {}
  onChange(l: () => void): void {
    this.listeners.push(l);
  }
  changed(): void {
    for (const l of this.listeners) l();
  }
}

/** The bytes of the range, in two chunks, as a holder would stream them. */
async function* serve(offset: number, length: number): AsyncGenerator<Uint8Array> {
  const bytes = data.subarray(offset, offset + length);
  yield bytes.subarray(0, length >> 1);
  yield bytes.subarray(length >> 1);
}

const pieceAt = (offset: number) => offset / PIECE;

/** Fetches the test blob into a new file with these holders and settings (the file must hold the blob); the stats. */
async function fetchAll(o: Partial<FetchPiecesOptions> & Pick<FetchPiecesOptions, 'fetchRange'>): Promise<{ stats: PieceStats }> {
  const path = o.path ?? join(tmp, `part-${file++}`);
  const stats = newStats();
  await fetchPieces({
    sha256,
    bytes: data.length,
    pieces: list,
    path,
    seeders: ['seed'],
    tracker: undefined,
    stats,
    signal: new AbortController().signal,
    onStart() {},
    onPiece() {},
    onSeeding() {},
    ...o,
  });
  expect(await readFile(path)).toEqual(data);
  return { stats };
}

describe('piece scheduler', () => {
  it('fetch pieces - the seeders are not asked for what a peer holds or is fetching from them, and a worker starts with its own share', async () => {
    const tracker = new FakeTracker();
    const seeding = new Bitfield(N);
    for (const i of [0, 1, 2, 3]) seeding.set(i);
    tracker.peers = [
      { address: 'w-a', have: new Bitfield(N), seeding },
      { address: 'w-c', have: new Bitfield(N) },
    ];
    const fromSeeder: number[] = [];
    const fromPeer: number[] = [];
    await fetchAll({
      self: 'w-b',
      tracker,
      fetchRange(address, offset, length) {
        if (address === 'seed') {
          fromSeeder.push(pieceAt(offset));
          // once the seeders sent the other four, w-a's four arrive and are announced
          if (fromSeeder.length === 4)
            setTimeout(() => {
              const have = new Bitfield(N);
              for (const i of [0, 1, 2, 3]) have.set(i);
              tracker.peers = [{ address: 'w-a', have }, tracker.peers[1]!];
              tracker.changed();
            }, 20);
        } else fromPeer.push(pieceAt(offset));
        return serve(offset, length);
      },
    });
    expect([...fromSeeder].sort()).toEqual([4, 5, 6, 7]);
    expect([...fromPeer].sort()).toEqual([0, 1, 2, 3]);
    // w-b ranks second of three holders (w-a, w-b, w-c): its first piece is one i with i mod 3 = 1
    expect([4, 7]).toContain(fromSeeder[0]);
  });

  it('fetch pieces - marks what it asks of the seeders while it is asked, for peers to see', async () => {
    const marked: number[][] = [];
    await fetchAll({
      fetchRange: (_address, offset, length) => serve(offset, length),
      onSeeding(_have, seeding) {
        marked.push(Array.from({ length: N }, (_, i) => i).filter((i) => seeding.has(i)));
      },
    });
    // each piece was marked once when asked and cleared when it arrived: every change is said
    expect(marked.length).toBe(2 * N);
    expect(marked.at(-1)).toEqual([]);
    expect(new Set(marked.flat()).size).toBe(N);
  });

  it('fetch pieces - a busy holder is asked again later, and is neither a failure nor dropped', async () => {
    let asked = 0;
    const { stats } = await fetchAll({
      busyBackoffMs: 5,
      fetchRange(_address, offset, length) {
        if (++asked <= 3) throw new HolderBusy('busy: 16 uploads at once');
        return serve(offset, length);
      },
    });
    expect(stats).toMatchObject({ busy: 3, failed: 0, pieces: N, fromSeeders: data.length });
  });

  it('fetch pieces - a peer that is always busy is dropped in the end, and the seeders send what it holds', async () => {
    const tracker = new FakeTracker();
    tracker.peers = [{ address: 'w-a', have: Bitfield.full(N) }];
    let peerAsked = 0;
    const { stats } = await fetchAll({
      self: 'w-b',
      tracker,
      busyBackoffMs: 2,
      fetchRange(address, offset, length) {
        if (address === 'seed') return serve(offset, length);
        peerAsked++;
        // a generator that throws when read, as a refused gRPC call does
        return (async function* () {
          yield* [];
          throw new HolderBusy('busy: 4 uploads at once');
        })();
      },
    });
    expect(stats.fromSeeders).toBe(data.length);
    expect(stats.fromPeers).toBe(0);
    expect(peerAsked).toBeGreaterThanOrEqual(50);
    expect(peerAsked).toBeLessThan(60);
  });
});

describe('piece scheduler, balance', () => {
  /** The most requests in flight at once while fetching pieces 4..7 (0..3 already in the partial file) from a complete peer, beside w-a holding `aHolds`. */
  async function mostAtOnce(aHolds: number[]): Promise<number> {
    const path = join(tmp, `part-${file++}`);
    const partial = Buffer.alloc(data.length);
    data.copy(partial, 0, 0, 4 * PIECE);
    await writeFile(path, partial);
    const a = new Bitfield(N);
    for (const i of aHolds) a.set(i);
    const tracker = new FakeTracker();
    tracker.peers = [
      { address: 'w-full', have: Bitfield.full(N) },
      { address: 'w-a', have: a },
    ];
    let now = 0;
    let most = 0;
    await fetchAll({
      path,
      self: 'w-b',
      tracker,
      fetchRange: (_address, offset, length) =>
        (async function* () {
          most = Math.max(most, ++now);
          try {
            await new Promise((r) => setTimeout(r, 30));
            yield* serve(offset, length);
          } finally {
            now--;
          }
        })(),
    });
    return most;
  }

  it('fetch pieces - a worker ahead of the peers still fetching keeps fewer streams, one level with them all of its streams', async () => {
    // w-b holds 4 pieces: w-a, fetching too, holds none (w-b is ahead), or 4 (level)
    expect(await mostAtOnce([])).toBe(STREAMS_WHEN_AHEAD);
    expect(await mostAtOnce([4, 5, 6, 7])).toBe(MAX_STREAMS_PER_BLOB);
  });
});

describe('piece scheduler, holders', () => {
  it('fetch pieces - streams go to every holder with a piece wanted, not all to the holder of the rarest pieces', async () => {
    // w-a alone holds 0..3 (the rarest), w-b and w-c both hold 4..7
    const low = new Bitfield(N);
    const high = new Bitfield(N);
    for (let i = 0; i < N; i++) (i < 4 ? low : high).set(i);
    const tracker = new FakeTracker();
    tracker.peers = [
      { address: 'w-a', have: low },
      { address: 'w-b', have: high },
      { address: 'w-c', have: high },
    ];
    const asked: string[] = [];
    const { stats } = await fetchAll({
      self: 'w-d',
      tracker,
      fetchRange: (address, offset, length) => {
        asked.push(address);
        return (async function* () {
          await new Promise((r) => setTimeout(r, 30));
          yield* serve(offset, length);
        })();
      },
    });
    expect(stats.fromPeers).toBe(data.length);
    // the first four streams (all at once) over three holders: two at most at any one (once only
    // w-a holds what is left, every stream goes to it, as it should)
    const first = asked.slice(0, 4);
    expect(Math.max(...['w-a', 'w-b', 'w-c'].map((a) => first.filter((x) => x === a).length))).toBeLessThanOrEqual(2);
  });
});

describe('piece scheduler, stalls', () => {
  it('fetch pieces - a peer that stops sending mid-piece is given up after the stall time, dropped, and the piece asked elsewhere', async () => {
    const tracker = new FakeTracker();
    tracker.peers = [{ address: 'w-a', have: Bitfield.full(N) }];
    let cancelled = 0;
    const started = Date.now();
    const { stats } = await fetchAll({
      self: 'w-b',
      tracker,
      stallMs: 100,
      fetchRange(address, offset, length, signal) {
        if (address === 'seed') return serve(offset, length);
        // one chunk, then nothing until the request is cancelled (as a call's cancel() ends it)
        return (async function* () {
          yield data.subarray(offset, offset + 10);
          await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
          cancelled++;
          throw new Error('Cancelled on client');
        })();
      },
    });
    // every stream took a piece of w-a at once, all stalled, each was cancelled and counted once
    expect(cancelled).toBeGreaterThanOrEqual(1);
    expect(stats.failed).toBe(cancelled);
    expect(stats).toMatchObject({ fromPeers: 0, fromSeeders: data.length });
    expect(Date.now() - started).toBeLessThan(5000);
  });
});

describe('bitfield', () => {
  it('pieces - a cleared piece is not held and no longer counted', () => {
    const b = new Bitfield(10);
    b.set(3);
    b.set(4);
    b.clear(3);
    b.clear(3);
    b.clear(9);
    expect(b.has(3)).toBe(false);
    expect(b.has(4)).toBe(true);
    expect(b.count).toBe(1);
  });
});
