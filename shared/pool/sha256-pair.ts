/**
 * A shard's two SHA-256 hashes (the whole shard, its name; and each piece of `pieceBytes`, as
 * PieceHasher does: an empty stream is one empty piece) computed together over the same 64-byte
 * blocks by the native `sha256Blocks` (SHA-NI): one pass over the bytes with the two chains
 * interleaved costs about what one hash costs (sha256rnds2's latency bounds one chain, not its
 * throughput). The digests are SHA-256's, identical to node:crypto's (test/unit/sha256-pair.test.ts).
 *
 * Pieces must be whole blocks (`pieceBytes` a multiple of 64, or 0: no pieces), so that both chains
 * see the same blocks. This class is also the hashing threads' code (hash-thread-source.ts takes its
 * source text): it refers to nothing outside itself but what its constructor is given.
 */
export class Sha256Pair {
  /** words 0–7: the shard's state; 8–15: the current piece's (when pieces are hashed) */
  private readonly st: Uint32Array;
  /** the bytes of an unfinished block, common to both chains */
  private readonly tail = new Uint8Array(64);
  private tailLen = 0;
  private total = 0;
  private pieceDone = 0;
  private readonly pieces: string[] = [];

  constructor(
    private readonly blocks: (states: Uint32Array, data: Uint8Array[]) => void,
    private readonly pieceBytes: number,
  ) {
    if (pieceBytes % 64 !== 0) throw new RangeError(`Sha256Pair: pieces of ${pieceBytes} bytes are not whole 64-byte blocks`);
    this.st = new Uint32Array(pieceBytes > 0 ? 16 : 8);
    Sha256Pair.init(this.st.subarray(0, 8));
    if (pieceBytes > 0) Sha256Pair.init(this.st.subarray(8, 16));
  }

  update(bytes: Uint8Array): void {
    let at = 0;
    while (at < bytes.length) {
      const n = this.pieceBytes > 0 ? Math.min(bytes.length - at, this.pieceBytes - this.pieceDone) : bytes.length - at;
      this.feed(bytes.subarray(at, at + n));
      at += n;
      this.total += n;
      this.pieceDone += n;
      if (this.pieceDone === this.pieceBytes) this.cutPiece();
    }
  }

  /**
   * Each of `pairs` hashes its `bytes`; two shards at the same point of their hashes (as the pool
   * build's vector blobs are: they get the same lengths in the same order) and given as many bytes
   * run side by side in one native call, four chains over two buffers: about 1.4× one's throughput.
   */
  static updateMany(pairs: Sha256Pair[], bytes: Uint8Array[]): void {
    const done = pairs.map(() => false);
    for (let i = 0; i < pairs.length; i++) {
      if (done[i]) continue;
      const a = pairs[i]!;
      let j = i + 1;
      while (j < pairs.length && (done[j] || !a.lockstep(pairs[j]!, bytes[i]!, bytes[j]!))) j++;
      if (j < pairs.length) {
        done[j] = true;
        Sha256Pair.updateTwo(a, pairs[j]!, bytes[i]!, bytes[j]!);
      } else a.update(bytes[i]!);
    }
  }

  /** The shard's sha256 and, when pieces are hashed, each piece's (hex). */
  digest(): { sha256: string; pieces?: string[] } {
    if (this.pieceBytes === 0) return { sha256: this.finish(this.st, this.total) };
    if (this.pieceDone > 0 || this.pieces.length === 0) this.cutPiece();
    return { sha256: this.finish(this.st.subarray(0, 8), this.total), pieces: this.pieces };
  }

  /** `o` is at the same point (offset, piece, tail) and is given as many bytes: the two can run as one. */
  private lockstep(o: Sha256Pair, x: Uint8Array, y: Uint8Array): boolean {
    return (
      o !== this &&
      o.blocks === this.blocks &&
      o.pieceBytes === this.pieceBytes &&
      o.total === this.total &&
      o.pieceDone === this.pieceDone &&
      o.tailLen === this.tailLen &&
      x.length === y.length
    );
  }

  /** update() of two shards in lockstep, their blocks in the same native calls. */
  private static updateTwo(a: Sha256Pair, b: Sha256Pair, x: Uint8Array, y: Uint8Array): void {
    let at = 0;
    while (at < x.length) {
      const n = a.pieceBytes > 0 ? Math.min(x.length - at, a.pieceBytes - a.pieceDone) : x.length - at;
      Sha256Pair.feedTwo(a, b, x.subarray(at, at + n), y.subarray(at, at + n));
      at += n;
      for (const p of [a, b]) {
        p.total += n;
        p.pieceDone += n;
        if (p.pieceDone === p.pieceBytes) p.cutPiece();
      }
    }
  }

  /** feed() of two shards in lockstep. */
  private static feedTwo(a: Sha256Pair, b: Sha256Pair, x: Uint8Array, y: Uint8Array): void {
    let at = 0;
    if (a.tailLen > 0) {
      at = Math.min(64 - a.tailLen, x.length);
      a.tail.set(x.subarray(0, at), a.tailLen);
      b.tail.set(y.subarray(0, at), b.tailLen);
      a.tailLen += at;
      b.tailLen += at;
      if (a.tailLen < 64) return;
      a.blocksWith(b, a.tail, b.tail);
      a.tailLen = 0;
      b.tailLen = 0;
    }
    const whole = x.length - at - ((x.length - at) % 64);
    if (whole > 0) a.blocksWith(b, x.subarray(at, at + whole), y.subarray(at, at + whole));
    at += whole;
    a.tail.set(x.subarray(at), 0);
    b.tail.set(y.subarray(at), 0);
    a.tailLen = x.length - at;
    b.tailLen = a.tailLen;
  }

  /** This shard's chains over `x` and `o`'s over `y` in one native call (their states side by side). */
  private blocksWith(o: Sha256Pair, x: Uint8Array, y: Uint8Array): void {
    const n = this.st.length;
    const both = new Uint32Array(2 * n);
    both.set(this.st, 0);
    both.set(o.st, n);
    this.blocks(both, [x, y]);
    this.st.set(both.subarray(0, n));
    o.st.set(both.subarray(n));
  }

  /** Both chains over `b`: whole blocks straight from it, the rest kept in `tail`. */
  private feed(b: Uint8Array): void {
    let at = 0;
    if (this.tailLen > 0) {
      at = Math.min(64 - this.tailLen, b.length);
      this.tail.set(b.subarray(0, at), this.tailLen);
      this.tailLen += at;
      if (this.tailLen < 64) return;
      this.blocks(this.st, [this.tail]);
      this.tailLen = 0;
    }
    const whole = b.length - at - ((b.length - at) % 64);
    if (whole > 0) this.blocks(this.st, [b.subarray(at, at + whole)]);
    at += whole;
    this.tail.set(b.subarray(at), 0);
    this.tailLen = b.length - at;
  }

  /** The current piece's digest (its bytes end at the tail), and a fresh piece chain. */
  private cutPiece(): void {
    const piece = this.st.subarray(8, 16);
    this.pieces.push(this.finish(piece, this.pieceDone));
    Sha256Pair.init(piece);
    this.pieceDone = 0;
  }

  /** Pads the tail for a message of `length` bytes, runs the final block(s) on `state` (one chain), as hex. */
  private finish(state: Uint32Array, length: number): string {
    const pad = new Uint8Array(this.tailLen < 56 ? 64 : 128);
    pad.set(this.tail.subarray(0, this.tailLen));
    pad[this.tailLen] = 0x80;
    const v = new DataView(pad.buffer);
    v.setUint32(pad.length - 8, Math.floor(length / 2 ** 29));
    v.setUint32(pad.length - 4, (length * 8) >>> 0);
    const s = state.slice();
    this.blocks(s, [pad.subarray(0, 64)]);
    if (pad.length === 128) this.blocks(s, [pad.subarray(64)]);
    let hex = '';
    for (const w of s) hex += w.toString(16).padStart(8, '0');
    return hex;
  }

  private static init(s: Uint32Array): void {
    s.set([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
  }
}
