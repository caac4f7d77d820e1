import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { perVectorGenome } from '../shared/genome.js';
import { nativeKernels } from '../shared/native-kernels.js';
import { buildPool } from '../shared/pool/build.js';
import { readManifest, SHARDS_DIR, type BlobRef } from '../shared/pool/manifest.js';
import { Pool } from '../shared/pool/reader.js';
import { ShardMaps } from '../shared/pool/shard-maps.js';
import { allocateWidened, mergeIntoWidened, mergeToBuffer, mergeWeights } from '../worker/merge/merge.js';
import { useTempDir } from './helpers/temp.js';

// The merge reads page-cached shards in place through mappings (native addon): the bytes must be
// the read path's, whatever the shard size (tensors inside one shard, straddling two, misaligned).

const tmp = useTempDir('shard-maps');
const hasMaps = typeof nativeKernels()?.mapFile === 'function';
const pools: Pool[] = [];

/** The family's pool cut into shards of `shardBytes` (small: tensors straddle shards). */
async function pool(name: string, family: ReturnType<typeof inject<'family'>>, shardBytes: number): Promise<Pool> {
  const dir = join(tmp, name);
  await buildPool({
    base: family.base,
    vectors: Object.entries(family.checkpoints).map(([n, path]) => ({ name: n, path })),
    out: dir,
    shardBytes,
  });
  const p = new Pool(await readManifest(dir), join(dir, SHARDS_DIR), name);
  pools.push(p);
  return p;
}

/** The shard files of a pool this process has mapped now (Linux's /proc/self/maps). */
function mappedShards(p: Pool): number {
  return readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.includes(p.shardsDir)).length;
}

/** Runs `f` with mappings off (OPTIMER_MMAP=0), as a machine without the addon reads. */
async function withoutMaps<T>(f: () => Promise<T>): Promise<T> {
  const was = process.env.OPTIMER_MMAP;
  process.env.OPTIMER_MMAP = '0';
  try {
    return await f();
  } finally {
    if (was === undefined) delete process.env.OPTIMER_MMAP;
    else process.env.OPTIMER_MMAP = was;
  }
}

afterAll(async () => {
  for (const p of pools) await p.close();
});

describe.skipIf(!hasMaps)('merge from mapped shards', () => {
  const shapes = [
    ['fp32, 64 MiB shards (one per blob)', 'family', 64 << 20],
    ['fp32, 4 KiB shards', 'family', 4096],
    ['fp16, 4 KiB shards', 'familyFp16', 4096],
    ['fp16, 3001-byte shards (misaligned views are read instead)', 'familyFp16', 3001],
  ] as const;

  it.each(shapes)('%s: the same bytes as reading, into the layout and into float32 arrays', async (_, which, shardBytes) => {
    const p = await pool(`${which}-${shardBytes}`, inject(which), shardBytes);
    const names = p.manifest.vectors.map((v) => v.name);
    const weighting = perVectorGenome(names).weighting(Object.fromEntries(names.map((n, i) => [n, [0.7, -0.3, 1.1, 0.4][i % 4]!])));
    const mapped = await mergeToBuffer(p, weighting);
    const read = await withoutMaps(() => mergeToBuffer(p, weighting));
    expect(mapped.length).toBe(read.length);
    for (let i = 0; i < read.length; i++) expect(Buffer.from(mapped[i]!).equals(Buffer.from(read[i]!))).toBe(true);
    const wideMapped = await mergeIntoWidened(p, weighting, allocateWidened(p));
    const wideRead = await withoutMaps(() => mergeIntoWidened(p, weighting, allocateWidened(p)));
    for (const [name, a] of wideRead) expect(Buffer.from(wideMapped.get(name)!.buffer).equals(Buffer.from(a.buffer))).toBe(true);
    expect(mappedShards(p)).toBe(0); // every mapping released with the merge
  });

  it('maps while it merges, at most one shard per blob at a time, none after', async () => {
    const p = await pool('fp32-watch', inject('family'), 4096);
    const names = p.manifest.vectors.map((v) => v.name);
    let most = 0;
    let chunks = 0;
    await mergeWeights(p, perVectorGenome(names).weighting(Object.fromEntries(names.map((n) => [n, 0.5]))), () => {
      chunks++;
      most = Math.max(most, mappedShards(p));
    });
    expect(chunks).toBeGreaterThan(0);
    expect(most).toBeGreaterThan(0); // the merge did read through mappings
    expect(most).toBeLessThanOrEqual(1 + names.length); // the base's and each vector's current shard
    expect(mappedShards(p)).toBe(0);
  });
});

describe.skipIf(!hasMaps)('ShardMaps', () => {
  it('gives views equal to reads; an earlier view of a blob is detached when the next shard is mapped, all of them at close', async () => {
    const p = await pool('fp32-views', inject('family'), 4096);
    const blob = p.manifest.base.blob;
    // tensors whose first 256 elements lie inside one shard, from two different shards
    const inside = p.manifest.tensors.filter((t) => {
      const o = blob.tensors[t.name];
      if (o === undefined || t.bytes < 1024) return false;
      const s = blob.shards.find((x) => x.offset <= o && o < x.offset + x.bytes)!;
      return o + 1024 <= s.offset + s.bytes;
    });
    const shardOf = (name: string) =>
      blob.shards.findIndex((s) => s.offset <= blob.tensors[name]! && blob.tensors[name]! < s.offset + s.bytes);
    const a = inside[0]!;
    const b = inside.find((t) => shardOf(t.name) !== shardOf(a.name))!;
    expect(b).toBeDefined();
    const maps = new ShardMaps(p);
    const va = maps.tensorView(blob, a, 0, 256)!;
    expect(Buffer.from(va).equals(Buffer.from(await p.readTensor(blob, a, 0, 256)))).toBe(true);
    const vb = maps.tensorView(blob, b, 0, 256)!;
    expect(Buffer.from(vb).equals(Buffer.from(await p.readTensor(blob, b, 0, 256)))).toBe(true);
    expect(va.length).toBe(0); // unmapped: detached, not dangling
    expect(vb.length).toBe(1024);
    maps.close();
    expect(vb.length).toBe(0);
    expect(mappedShards(p)).toBe(0);
  });

  it('leaves to the reader what it cannot map: a range across two shards, a missing shard', async () => {
    const p = await pool('fp32-gaps', inject('family'), 4096);
    const blob: BlobRef = p.manifest.base.blob;
    const across = p.manifest.tensors.find((t) => {
      const o = blob.tensors[t.name];
      return o !== undefined && Math.floor(o / 4096) !== Math.floor((o + t.bytes - 1) / 4096);
    })!;
    const maps = new ShardMaps(p);
    expect(maps.tensorView(blob, across, 0, across.bytes / 4)).toBeUndefined();
    const elsewhere = new ShardMaps(new Pool(p.manifest, join(tmp, 'no-such-dir'), 'empty'));
    expect(elsewhere.tensorView(blob, across, 0, 1)).toBeUndefined();
    maps.close();
    elsewhere.close();
  });
});
