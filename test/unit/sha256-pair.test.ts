import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { nativeKernels } from '../../shared/native-kernels.js';
import { PieceHasher } from '../../shared/pieces.js';
import { Sha256Pair } from '../../shared/pool/sha256-pair.js';
import { Rng } from '../../shared/rng.js';

const blocks = nativeKernels()?.sha256Blocks;

describe.skipIf(!blocks)('Sha256Pair (native SHA-NI)', () => {
  it('sha256 pair - digests equal createHash and PieceHasher, any split of the updates, pieces of whole blocks or none', () => {
    const rng = new Rng(11);
    for (const pieceBytes of [0, 64, 128, 4096, 1 << 16]) {
      for (const length of [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 4095, 4096, 4097, 70_000, 200_001]) {
        const data = new Uint8Array(length);
        for (let i = 0; i < length; i++) data[i] = Math.floor(rng.uniform() * 256);
        const pair = new Sha256Pair(blocks!, pieceBytes);
        for (let at = 0; at < length; ) {
          const n = Math.min(length - at, Math.floor(rng.uniform() * (rng.uniform() < 0.5 ? 100 : 20_000)));
          pair.update(data.subarray(at, at + n));
          at += n;
        }
        const want = createHash('sha256').update(data).digest('hex');
        const got = pair.digest();
        expect(got.sha256, `${length} bytes, pieces of ${pieceBytes}`).toBe(want);
        if (pieceBytes === 0) expect(got.pieces).toBeUndefined();
        else {
          const p = new PieceHasher(pieceBytes);
          p.update(data);
          expect(got.pieces, `${length} bytes, pieces of ${pieceBytes}`).toEqual(p.finish());
        }
      }
    }
  });

  it('sha256 pair - updateMany: shards in lockstep hashed side by side give the digests of each alone', () => {
    const rng = new Rng(5);
    for (const pieceBytes of [0, 128, 4096]) {
      // four shards in lockstep, one that starts later, one given other lengths
      const pairs = Array.from({ length: 6 }, () => new Sha256Pair(blocks!, pieceBytes));
      const data: number[][] = pairs.map(() => []);
      for (let round = 0; round < 40; round++) {
        const n = Math.floor(rng.uniform() * (rng.uniform() < 0.5 ? 200 : 30_000));
        const bytes = pairs.map((_, i) => {
          const len = i === 5 ? Math.floor(rng.uniform() * 300) : i === 4 && round < 3 ? 0 : n;
          return new Uint8Array(len).map(() => Math.floor(rng.uniform() * 256));
        });
        Sha256Pair.updateMany(pairs, bytes);
        for (const [i, b] of bytes.entries()) data[i]!.push(...b);
      }
      pairs.forEach((p, i) => {
        const all = new Uint8Array(data[i]!);
        const got = p.digest();
        expect(got.sha256, `shard ${i}, pieces of ${pieceBytes}`).toBe(createHash('sha256').update(all).digest('hex'));
        if (pieceBytes > 0) {
          const ph = new PieceHasher(pieceBytes);
          ph.update(all);
          expect(got.pieces).toEqual(ph.finish());
        }
      });
    }
  });

  it('sha256 pair - the native kernel takes two buffers at once (four chains) as it takes each alone', () => {
    const a = new Uint8Array(64 * 5).map((_, i) => (i * 7) & 255);
    const b = new Uint8Array(64 * 5).map((_, i) => (i * 13) & 255);
    const st = new Uint32Array(32).map((_, i) => i * 0x9e3779b9);
    const one = st.slice();
    blocks!(st, [a, b]);
    blocks!(one.subarray(0, 16), [a]);
    blocks!(one.subarray(16), [b]);
    expect(st).toEqual(one);
  });

  it('sha256 pair - refuses pieces that are not whole blocks, and the native kernel refuses uneven buffers', () => {
    expect(() => new Sha256Pair(blocks!, 100)).toThrow(/not whole 64-byte blocks/);
    expect(() => blocks!(new Uint32Array(8), [new Uint8Array(63)])).toThrow(/multiple of 64/);
    expect(() => blocks!(new Uint32Array(12), [new Uint8Array(64)])).toThrow(/8 or 16 words/);
  });
});
