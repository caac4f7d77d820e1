import { createHash, type Hash } from 'node:crypto';

/**
 * Shards cut into fixed-size pieces, each with its own sha256 (listed in the manifest), so a
 * worker can verify, serve and fetch a shard piece by piece, from several peers at once.
 */
export interface PieceList {
  /** every piece is this long but the last */
  pieceBytes: number;
  /** sha256 of each piece, in order */
  pieces: string[];
}

export function pieceCount(bytes: number, pieceBytes: number): number {
  return Math.max(1, Math.ceil(bytes / pieceBytes));
}

/** Where piece `i` of a blob of `bytes` lies. */
export function pieceRange(i: number, bytes: number, pieceBytes: number): { offset: number; length: number } {
  const offset = i * pieceBytes;
  return { offset, length: Math.max(0, Math.min(pieceBytes, bytes - offset)) };
}

/** Which pieces are held: bit (7 − i % 8) of byte ⌊i / 8⌋, as sent in a Holder message. */
export class Bitfield {
  readonly bytes: Uint8Array<ArrayBuffer>;
  private held = 0;

  constructor(
    readonly size: number,
    bytes?: Uint8Array,
  ) {
    this.bytes = new Uint8Array(Math.ceil(size / 8));
    if (bytes) {
      if (bytes.length !== this.bytes.length)
        throw new RangeError(`bitfield of ${size} pieces needs ${this.bytes.length} bytes, got ${bytes.length}`);
      this.bytes.set(bytes);
      // bits past `size` are ignored, never counted
      for (let i = 0; i < size; i++) if (this.has(i)) this.held++;
      for (let i = size; i < this.bytes.length * 8; i++) this.bytes[i >> 3]! &= ~(0x80 >> (i & 7));
    }
  }

  static full(size: number): Bitfield {
    const b = new Bitfield(size);
    for (let i = 0; i < size; i++) b.set(i);
    return b;
  }

  has(i: number): boolean {
    return i >= 0 && i < this.size && (this.bytes[i >> 3]! & (0x80 >> (i & 7))) !== 0;
  }

  set(i: number): void {
    if (i < 0 || i >= this.size) throw new RangeError(`piece ${i} outside 0..${this.size - 1}`);
    if (this.has(i)) return;
    this.bytes[i >> 3]! |= 0x80 >> (i & 7);
    this.held++;
  }

  clear(i: number): void {
    if (!this.has(i)) return;
    this.bytes[i >> 3]! &= ~(0x80 >> (i & 7));
    this.held--;
  }

  get count(): number {
    return this.held;
  }

  get complete(): boolean {
    return this.held === this.size;
  }

  /** Whether every piece in [offset, offset + length) of a blob cut into `pieceBytes` is held. */
  covers(offset: number, length: number, pieceBytes: number): boolean {
    if (length === 0) return true;
    const last = Math.floor((offset + length - 1) / pieceBytes);
    for (let i = Math.floor(offset / pieceBytes); i <= last; i++) if (!this.has(i)) return false;
    return true;
  }
}

/**
 * The piece to fetch next: among those `wanted` (missing and not in flight) that some holder
 * has, the one fewest holders have (rarest first spreads copies fastest); ties broken by
 * `random` so that workers starting together fetch different pieces. -1 when no holder has any.
 */
export function pickRarest(wanted: Iterable<number>, holders: readonly Bitfield[], random: () => number): number {
  let best = -1;
  let bestCount = Number.POSITIVE_INFINITY;
  let ties = 0;
  for (const i of wanted) {
    let n = 0;
    for (const h of holders) if (h.has(i)) n++;
    if (n === 0) continue;
    if (n < bestCount) {
      best = i;
      bestCount = n;
      ties = 1;
    } else if (n === bestCount && random() * ++ties < 1) best = i; // reservoir: each tie equally likely
  }
  return best;
}

/** Hashes a byte stream piece by piece as it is written (the shard writer's side). */
export class PieceHasher {
  readonly pieces: string[] = [];
  private hash: Hash = createHash('sha256');
  private filled = 0;

  constructor(readonly pieceBytes: number) {}

  update(bytes: Uint8Array): void {
    let at = 0;
    while (at < bytes.length) {
      const n = Math.min(bytes.length - at, this.pieceBytes - this.filled);
      this.hash.update(bytes.subarray(at, at + n));
      this.filled += n;
      at += n;
      if (this.filled === this.pieceBytes) this.cut();
    }
  }

  /** The piece hashes of everything written (an empty stream is one empty piece). */
  finish(): string[] {
    if (this.filled > 0 || this.pieces.length === 0) this.cut();
    return this.pieces;
  }

  private cut(): void {
    this.pieces.push(this.hash.digest('hex'));
    this.hash = createHash('sha256');
    this.filled = 0;
  }
}
