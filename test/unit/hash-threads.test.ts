import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { PieceHasher } from '../../shared/pieces.js';
import { HashThreads, runningHashThreads } from '../../shared/pool/hash-threads.js';
import { mainThreadHashing, sharedBytes, type Hashing } from '../../shared/pool/shard-hash.js';
import { Rng } from '../../shared/rng.js';
import { nativeKernels } from '../../shared/native-kernels.js';
import { failingHashThreadSource } from '../helpers/hash-threads.js';

const open: Hashing[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((h) => h.close()));
  expect(runningHashThreads()).toBe(0);
});

async function start(count: number, source?: string): Promise<HashThreads> {
  const h = await HashThreads.start(count, source);
  if (!h) throw new Error('hashing threads did not start');
  open.push(h);
  return h;
}

describe('hashing threads', () => {
  it('hash threads - digests equal createHash and PieceHasher over random chunks, shared or not, shards interleaved', async () => {
    const rng = new Rng(7);
    for (const threads of [1, 2, 3]) {
      const h = await start(threads);
      // with the native SHA-NI kernel the threads run a shard's two hashes as one pass (pieces of whole blocks)
      expect(h.pair).toBe(nativeKernels()?.sha256Blocks !== undefined);
      for (const pieceBytes of [0, 7, 1000, 4096]) {
        // three shards written in turns, as the build's writers do, each from random-sized chunks
        const shards = [0, 1, 2].map(() => ({ hash: h.shard(pieceBytes), data: [] as Buffer[] }));
        for (let round = 0; round < 12; round++) {
          await Promise.all(
            shards.map(async (s, i) => {
              const n = rng.int(round % 4 === 0 ? 9000 : 700);
              const chunk = (i + round) % 2 === 0 ? sharedBytes(n + 3).subarray(3) : new Uint8Array(n);
              for (let j = 0; j < n; j++) chunk[j] = rng.int(256);
              await s.hash.update(chunk);
              s.data.push(Buffer.from(chunk));
              chunk.fill(0); // the caller may reuse its bytes once update() resolved
            }),
          );
        }
        for (const s of shards) {
          const all = Buffer.concat(s.data);
          const d = await s.hash.digest();
          expect(d.sha256).toBe(createHash('sha256').update(all).digest('hex'));
          if (pieceBytes === 0) expect(d.pieces).toBeUndefined();
          else {
            const p = new PieceHasher(pieceBytes);
            p.update(all);
            expect(d.pieces).toEqual(p.finish());
          }
          const same = mainThreadHashing.shard(pieceBytes);
          await same.update(all);
          expect(await same.digest()).toEqual(d);
        }
      }
      // an empty shard: the hash of nothing, one empty piece
      const empty = await h.shard(8).digest();
      expect(empty).toEqual({ sha256: createHash('sha256').digest('hex'), pieces: [createHash('sha256').digest('hex')] });
    }
  });

  it('hash threads - a thread that fails refuses what waits and what follows, and close() stops them all', async () => {
    const h = await start(2, failingHashThreadSource(2));
    const a = h.shard(100);
    await a.update(new Uint8Array(10)); // each thread's first update
    const err = await a.update(new Uint8Array(10)).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'RUNTIME' });
    expect((err as Error).message).toMatch(/pool build: a hashing thread failed: injected hashing failure/);
    await expect(h.shard(100).digest()).rejects.toThrow(/a hashing thread failed/);
    await h.close();
    await h.close(); // idempotent
    expect(runningHashThreads()).toBe(0);
  });

  it('hash threads - threads that cannot start give none (the build falls back to this thread), and leave none running', async () => {
    expect(await HashThreads.start(2, 'throw new Error("no hashing here")')).toBeUndefined();
    expect(await HashThreads.start(2, 'process.exit(3)')).toBeUndefined();
    expect(await HashThreads.start(0)).toBeUndefined();
    expect(runningHashThreads()).toBe(0);
  });
});
