import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Bitfield, PieceHasher, pickRarest, pieceCount, pieceRange } from '../../shared/pieces.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe('pieces', () => {
  it('pieces - ranges cover a blob exactly, the last piece shorter', () => {
    expect(pieceCount(10, 4)).toBe(3);
    expect(pieceCount(8, 4)).toBe(2);
    expect(pieceCount(0, 4)).toBe(1);
    expect([0, 1, 2].map((i) => pieceRange(i, 10, 4))).toEqual([
      { offset: 0, length: 4 },
      { offset: 4, length: 4 },
      { offset: 8, length: 2 },
    ]);
  });

  it('pieces - the hasher gives each piece its own sha256 whatever the write sizes', () => {
    const data = Buffer.from(Array.from({ length: 1000 }, (_, i) => (i * 7) & 255));
    const h = new PieceHasher(300);
    for (let at = 0; at < data.length; at += 77) h.update(data.subarray(at, Math.min(data.length, at + 77)));
    expect(h.finish()).toEqual([0, 300, 600, 900].map((o) => sha(data.subarray(o, o + 300))));
    expect(new PieceHasher(4).finish()).toEqual([sha(new Uint8Array(0))]);
  });

  it('pieces - a bitfield round-trips, counts once, ignores stray bits and refuses a wrong length', () => {
    const b = new Bitfield(10);
    b.set(0);
    b.set(9);
    b.set(9);
    expect(b.count).toBe(2);
    expect([...b.bytes]).toEqual([0x80, 0x40]);
    const c = new Bitfield(10, Uint8Array.from([0x80, 0x7f]));
    expect(c.count).toBe(2); // 0x7f sets bits 9..15: those past piece 9 are dropped
    expect([0, 9].every((i) => c.has(i))).toBe(true);
    expect(c.has(10)).toBe(false);
    expect(() => new Bitfield(10, new Uint8Array(1))).toThrow(/needs 2 bytes/);
    expect(() => b.set(10)).toThrow(RangeError);
    expect(Bitfield.full(10).complete).toBe(true);
    expect(b.covers(0, 4, 4)).toBe(true); // piece 0 is held
    expect(b.covers(2, 4, 4)).toBe(false); // spans pieces 0 and 1; 1 is not
    const d = Bitfield.full(3);
    expect(d.covers(4, 5, 4)).toBe(true);
  });

  it('pieces - rarest first, only pieces some holder has, ties spread', () => {
    const a = new Bitfield(4);
    const b = new Bitfield(4);
    for (const i of [0, 1, 2]) a.set(i);
    for (const i of [0, 1]) b.set(i);
    expect(pickRarest([0, 1, 2, 3], [a, b], () => 0.5)).toBe(2);
    expect(pickRarest([3], [a, b], () => 0.5)).toBe(-1);
    const seen = new Set<number>();
    let x = 0;
    const lcg = () => {
      x = (x * 9301 + 49297) % 233280;
      return x / 233280;
    };
    for (let k = 0; k < 50; k++) seen.add(pickRarest([0, 1], [a, b], lcg));
    expect(seen).toEqual(new Set([0, 1]));
  });
});
