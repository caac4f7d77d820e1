import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import { buildPool } from '../shared/pool/build.js';
import { Pool } from '../shared/pool/reader.js';
import { cosineMatrix } from '../shared/pool/stats.js';
import { decodeFloats } from '../shared/onnx/dtype.js';
import { setExternal, writeModel } from '../shared/onnx/build.js';
import { DEFAULT_FAMILY_SHAPE, loadFamilyParams } from '../shared/family/build.js';
import { familyToOnnx } from '../shared/family/to-onnx.js';
import { paramNames } from '../shared/family/model.js';
import { OptimerError } from '../shared/errors.js';
import { buildFamilyPool } from './helpers/family.js';
import { useTempDir } from './helpers/temp.js';

const family = inject('family');
const familyFp16 = inject('familyFp16');
const familyExternal = inject('familyExternal');
const tmp = useTempDir('pool');

/** The family's vectors flattened, straight from the checkpoints (independent of the pool). */
async function referenceVectors(f = family): Promise<Record<string, number[]>> {
  const base = await loadFamilyParams(f.base);
  const out: Record<string, number[]> = {};
  for (const [name, path] of Object.entries(f.checkpoints)) {
    const ck = await loadFamilyParams(path);
    out[name] = paramNames.flatMap((pn) => Array.from(ck[pn], (x, i) => x - base[pn][i]!));
  }
  return out;
}

describe('pool build', () => {
  it('pool build - stores the base, each vector θ_i − θ_base and the graph, content-addressed', async () => {
    const out = join(tmp, 'fp32');
    const m = await buildFamilyPool(family, out);
    expect(m.vectors.map((v) => v.name)).toEqual(['ja', 'zh', 'math', 'code']);
    expect(m.model).toEqual({ input: 'input_ids', output: 'logits', attentionMask: null, vocab: 64, contextLength: 64 });
    // float tensors merged, the int64 Slice/Pad constants copied
    expect(m.tensors.filter((t) => t.merged).map((t) => t.name)).toEqual([...paramNames]);
    expect(m.tensors.filter((t) => !t.merged).map((t) => [t.name, t.dtype])).toEqual([
      ['slice_starts', 'int64'],
      ['slice_ends', 'int64'],
      ['slice_axes', 'int64'],
      ['prev_pads', 'int64'],
    ]);
    const pool = await Pool.open(out);
    try {
      await pool.verify();
      const ref = await referenceVectors();
      for (const v of m.vectors) {
        const got: number[] = [];
        for (const t of m.tensors.filter((x) => x.merged)) {
          const n = t.bytes / 4;
          const f = new Float32Array(n);
          decodeFloats(t.dtype, await pool.readTensor(v.blob, t), f, n);
          got.push(...f);
        }
        expect(got.length).toBe(ref[v.name]!.length);
        let maxErr = 0;
        for (let i = 0; i < got.length; i++) maxErr = Math.max(maxErr, Math.abs(got[i]! - ref[v.name]![i]!));
        expect(maxErr).toBeLessThan(1e-6);
      }
    } finally {
      await pool.close();
    }
  });

  it('pool build - norms and cosine similarities match a direct computation', async () => {
    const m = await buildFamilyPool(family, join(tmp, 'stats'));
    const ref = await referenceVectors();
    const names = m.vectors.map((v) => v.name);
    const dot = (a: number[], b: number[]) => a.reduce((s, x, i) => s + x * b[i]!, 0);
    const cos = cosineMatrix(m.gram);
    for (const [i, a] of names.entries()) {
      expect(m.vectors[i]!.l2).toBeCloseTo(Math.sqrt(dot(ref[a]!, ref[a]!)), 4);
      for (const [j, b] of names.entries()) {
        const expected = dot(ref[a]!, ref[b]!) / Math.sqrt(dot(ref[a]!, ref[a]!) * dot(ref[b]!, ref[b]!));
        expect(cos[i]![j]).toBeCloseTo(expected, 5);
      }
    }
    // the family's vectors are nearly orthogonal, as CPT vectors are
    for (let i = 0; i < names.length; i++) for (let j = 0; j < i; j++) expect(Math.abs(cos[i]![j]!)).toBeLessThan(0.5);
  });

  it('pool build - reads fp16 initializers and stores fp16 deltas', async () => {
    const m = await buildFamilyPool(familyFp16, join(tmp, 'fp16'));
    const merged = m.tensors.filter((t) => t.merged);
    expect(new Set(merged.map((t) => t.dtype))).toEqual(new Set(['float16']));
    expect(m.vectors[0]!.blob.bytes).toBe(merged.reduce((a, t) => a + t.bytes, 0));
    const fp32 = await buildFamilyPool(family, join(tmp, 'fp32-cmp'));
    // half-precision vectors are the same vectors, to fp16 rounding
    for (const [i, v] of m.vectors.entries()) expect(v.l2).toBeCloseTo(fp32.vectors[i]!.l2, 1);
  });

  it('pool build - reads ONNX external data and builds the same pool as inline weights', async () => {
    const ext = await buildFamilyPool(familyExternal, join(tmp, 'ext'));
    const inline = await buildFamilyPool(family, join(tmp, 'inline'));
    expect(ext.vectors.map((v) => v.blob.shards.map((s) => s.sha256))).toEqual(
      inline.vectors.map((v) => v.blob.shards.map((s) => s.sha256)),
    );
    expect(ext.base.blob.shards).toEqual(inline.base.blob.shards);
  });

  it('pool build - weights spread over several external-data files (model.onnx_data, one file per tensor) build the same pool', async () => {
    /** The model with its first two tensors in Optimum's model.onnx_data and every other one in a file of its own. */
    const spread = async (name: string, params: Awaited<ReturnType<typeof loadFamilyParams>>): Promise<string> => {
      const dir = join(tmp, 'spread', name);
      await mkdir(dir, { recursive: true });
      const model = familyToOnnx(DEFAULT_FAMILY_SHAPE, params);
      const shared: Uint8Array[] = [];
      let at = 0;
      model.graph!.initializer = await Promise.all(
        model.graph!.initializer!.map(async (t, i) => {
          const raw = t.rawData!;
          if (i < 2) {
            const ext = setExternal(t, 'model.onnx_data', at, raw.length);
            shared.push(raw);
            at += raw.length;
            return ext;
          }
          await writeFile(join(dir, `${t.name}.weight`), raw);
          return setExternal(t, `${t.name}.weight`, 0, raw.length);
        }),
      );
      await writeFile(join(dir, 'model.onnx_data'), Buffer.concat(shared));
      await writeModel(join(dir, 'model.onnx'), model);
      return join(dir, 'model.onnx');
    };
    const base = await spread('base', await loadFamilyParams(family.base));
    const ja = await spread('ja', await loadFamilyParams(family.checkpoints.ja!));
    const m = await buildPool({ base, vectors: [{ name: 'ja', path: ja }], out: join(tmp, 'spread-pool') });
    const inline = await buildPool({
      base: family.base,
      vectors: [{ name: 'ja', path: family.checkpoints.ja! }],
      out: join(tmp, 'spread-inline'),
    });
    expect(m.vectors[0]!.blob.shards).toEqual(inline.vectors[0]!.blob.shards);
    expect(m.base.blob.shards).toEqual(inline.base.blob.shards);
  });

  it('pool build - cuts blobs into shards of the requested size, tensors spanning shards', async () => {
    const out = join(tmp, 'small-shards');
    const m = await buildPool({ base: family.base, vectors: [{ name: 'ja', path: family.checkpoints.ja! }], out, shardBytes: 1000 });
    expect(m.vectors[0]!.blob.shards.length).toBeGreaterThan(10);
    expect(m.vectors[0]!.blob.shards.every((s) => s.bytes <= 1000)).toBe(true);
    const pool = await Pool.open(out);
    await pool.verify();
    const ref = await buildFamilyPool(family, join(tmp, 'big-shards'));
    const other = await Pool.open(join(tmp, 'big-shards'));
    for (const t of m.tensors.filter((x) => x.merged)) {
      expect(Buffer.from(await pool.readTensor(m.vectors[0]!.blob, t))).toEqual(
        Buffer.from(await other.readTensor(ref.vectors[0]!.blob, t)),
      );
    }
    await pool.close();
    await other.close();
  });
});

describe('pool build refuses checkpoints that cannot share a pool', () => {
  async function writeVariant(
    name: string,
    edit: (m: ReturnType<typeof familyToOnnx>) => void,
    shape = DEFAULT_FAMILY_SHAPE,
  ): Promise<string> {
    const params = await loadFamilyParams(family.checkpoints.ja!);
    const dir = join(tmp, 'bad');
    await mkdir(dir, { recursive: true });
    const s = { ...shape };
    const p =
      shape === DEFAULT_FAMILY_SHAPE
        ? params
        : {
            ...params,
            A: new Float64Array(s.dim * s.hidden),
            B: new Float64Array(s.dim * s.hidden),
            b: new Float64Array(s.hidden),
            U: new Float64Array(s.hidden * s.vocab),
          };
    const model = familyToOnnx(s, p);
    edit(model);
    const path = join(dir, `${name}.onnx`);
    await writeModel(path, model);
    return path;
  }
  const attempt = (path: string) =>
    buildPool({
      base: family.base,
      vectors: [
        { name: 'ok', path: family.checkpoints.zh! },
        { name: 'bad', path },
      ],
      out: join(tmp, `refused-${Math.random()}`),
    });

  it('pool build - names a tensor whose shape differs', async () => {
    const path = await writeVariant('hidden32', () => undefined, { ...DEFAULT_FAMILY_SHAPE, hidden: 32 });
    await expect(attempt(path)).rejects.toThrow(/initializer 'A' has shape \[16, 32\], the base's is \[16, 48\]/);
  });

  it('pool build - names a non-float initializer whose values differ', async () => {
    const path = await writeVariant('slice', (m) => {
      const t = m.graph!.initializer!.find((x) => x.name === 'slice_ends')!;
      t.rawData = new Uint8Array(BigInt64Array.from([-2n]).buffer);
    });
    const err = await attempt(path).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OptimerError);
    expect((err as OptimerError).code).toBe('POOL_MISMATCH');
    expect((err as OptimerError).message).toMatch(/initializer 'slice_ends' \(int64, not merged\) differs from the base's at element 0/);
  });

  it('pool build - names an initializer whose dtype differs', async () => {
    const path = await writeVariant('dtype', (m) => {
      const t = m.graph!.initializer!.find((x) => x.name === 'U')!;
      t.dataType = 10; // float16: half the bytes
      t.rawData = t.rawData!.subarray(0, t.rawData!.length / 2);
    });
    await expect(attempt(path)).rejects.toThrow(/initializer 'U' is float16, the base's is float32/);
  });

  it('pool build - names a missing initializer and a differing graph node', async () => {
    const missing = await writeVariant('missing', (m) => {
      m.graph!.initializer = m.graph!.initializer!.filter((x) => x.name !== 'c');
    });
    await expect(attempt(missing)).rejects.toThrow(/initializer 'c' of the base is missing/);
    const op = await writeVariant('op', (m) => {
      m.graph!.node!.find((n) => n.opType === 'Tanh')!.opType = 'Sigmoid';
    });
    await expect(attempt(op)).rejects.toThrow(/graph differs from the base at node #7 \(Tanh 'Tanh_h'\): op Sigmoid vs Tanh/);
  });

  it('pool build - names a checkpoint tensor holding NaN or an infinity (a diverged checkpoint), and leaves no manifest behind', async () => {
    for (const [label, value] of [
      ['nan', Number.NaN],
      ['inf', Number.NEGATIVE_INFINITY],
    ] as const) {
      const path = await writeVariant(label, (m) => {
        const t = m.graph!.initializer!.find((x) => x.name === 'B')!;
        const f = new Float32Array(t.rawData!.slice().buffer);
        f[5] = value;
        t.rawData = new Uint8Array(f.buffer);
      });
      const out = join(tmp, `refused-${label}`);
      const err = await buildPool({
        base: family.base,
        vectors: [
          { name: 'ok', path: family.checkpoints.zh! },
          { name: 'bad', path },
        ],
        out,
      }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'BAD_ONNX' });
      expect((err as Error).message).toMatch(/vector 'bad' \(.*\.onnx\): tensor 'B' holds NaN or infinite values/);
      await expect(readFile(join(out, 'manifest.json'))).rejects.toThrow();
    }
  });

  it('pool build - refuses a dtype change, a corrupt file, and leaves no manifest behind', async () => {
    await expect(
      buildPool({ base: family.base, vectors: [{ name: 'h', path: familyFp16.checkpoints.ja! }], out: join(tmp, 'dtype') }),
    ).rejects.toThrow(/cpt-ja\.onnx: graph differs from the base at node #0 \(Gather 'Gather_emb'\): op Cast vs Gather/);
    const junk = join(tmp, 'junk.onnx');
    await writeFile(junk, 'this is not a model');
    await expect(buildPool({ base: family.base, vectors: [{ name: 'j', path: junk }], out: join(tmp, 'junk') })).rejects.toThrow(
      /junk\.onnx: not an ONNX model|junk\.onnx: the model has no graph/,
    );
    await expect(readFile(join(tmp, 'junk', 'manifest.json'))).rejects.toThrow();
    await expect(
      buildPool({ base: family.base, vectors: [{ name: 'a b', path: family.checkpoints.ja! }], out: join(tmp, 'name') }),
    ).rejects.toThrow(/vector name 'a b'/);
  });
});

describe('pool reader', () => {
  it('pool inspect - detects a tampered shard and a tampered manifest', async () => {
    const out = join(tmp, 'tamper');
    const m = await buildFamilyPool(family, out);
    const shard = join(out, 'shards', m.vectors[1]!.blob.shards[0]!.sha256);
    const bytes = await readFile(shard);
    bytes[10] = bytes[10]! ^ 0xff;
    await writeFile(shard, bytes);
    const pool = await Pool.open(out);
    await expect(pool.verify()).rejects.toThrow(new RegExp(`shard ${m.vectors[1]!.blob.shards[0]!.sha256} is corrupt`));
    await pool.close();
    const manifest = JSON.parse(await readFile(join(out, 'manifest.json'), 'utf8'));
    manifest.vectors[2].blob.shards[0].sha256 = 'XYZ';
    await writeFile(join(out, 'manifest.json'), JSON.stringify(manifest));
    await expect(Pool.open(out)).rejects.toThrow(/vectors\[2\]\.blob\.shards\[0\]\.sha256: expected a lowercase hex sha256/);
  });
});
