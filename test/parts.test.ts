import { execFile } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { Coordinator } from '../coordinator/coordinator.js';
import { openLevelStore } from '../coordinator/store/level-store.js';
import { loadStudyConfig } from '../coordinator/study/config.js';
import { silentLogger } from '../shared/logging.js';
import { uniformWeighting } from '../shared/genome.js';
import { setExternal } from '../shared/onnx/build.js';
import { decodeModel, encodeModel } from '../shared/onnx/proto.js';
import { buildPool, MAX_TENSOR_BYTES } from '../shared/pool/build.js';
import { MANIFEST_FILE, parseManifest, partName, type PoolManifest, weightParts } from '../shared/pool/manifest.js';
import { Pool } from '../shared/pool/reader.js';
import { loadEvalSets } from '../shared/eval-set.js';
import { evaluateMerge, evaluateSession } from '../worker/eval/evaluate.js';
import { createFileSession } from '../worker/eval/session.js';
import { exportOnnx } from '../worker/merge/export.js';
import { mergeToBuffer } from '../worker/merge/merge.js';
import { useNatsServer } from './helpers/nats.js';
import { exited, Processes, writeStudyConfig } from './helpers/study.js';
import { useTempDir } from './helpers/temp.js';

const family = inject('family');
const cli = inject('cli');
const tmp = useTempDir('parts');
const nats = useNatsServer();
const procs = new Processes();
afterAll(() => procs.stopAll());

function optimer(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cli, ...args], { timeout: 120_000, cwd: tmp }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

const vectorArgs = () => Object.entries(family.checkpoints).flatMap(([n, p]) => ['--vector', `${n}=${p}`]);
const setArgs = () => Object.entries(family.dev).flatMap(([n, p]) => ['--set', `${n}=${p}`]);
const one = join(tmp, 'one');
const many = join(tmp, 'many');
const readJson = async (dir: string): Promise<PoolManifest> => JSON.parse(await readFile(join(dir, MANIFEST_FILE), 'utf8'));

beforeAll(async () => {
  for (const [out, extra] of [
    [one, []],
    [many, ['--weights-part-mb', '0.002']], // ~2 KiB parts: the family's weights span several
  ] as const) {
    const r = await optimer('pool', 'build', '--base', family.base, ...vectorArgs(), '--out', out, ...extra);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  }
});

describe('merged weights in several parts', () => {
  it('parts - a small part size cuts the layout into parts; the graph points into each', async () => {
    const m = await readJson(many);
    expect(await readJson(one)).not.toHaveProperty('weightParts');
    expect(m.weightParts!.length).toBeGreaterThan(2);
    expect(m.weightParts!.reduce((a, b) => a + b, 0)).toBe(m.weightsBytes);
    const parts = weightParts(m);
    const graph = decodeModel(await readFile(join(many, 'shards', m.graph.sha256)), 'graph');
    const inits = graph.graph!.initializer!;
    const used = new Set<number>();
    m.tensors.forEach((t, i) => {
      if (t.offset === null) return;
      const p = t.part ?? 0;
      used.add(p);
      const ext = Object.fromEntries(inits[i]!.externalData!.map((e) => [e.key, e.value]));
      expect(ext.location).toBe(partName(p));
      expect(Number(ext.offset)).toBe(t.offset - parts[p]!.start);
      // a part holds whole tensors, up to the part size unless one tensor alone is larger
      expect(t.offset + t.bytes).toBeLessThanOrEqual(parts[p]!.start + parts[p]!.bytes);
    });
    expect(used.size).toBe(parts.length);
    const inspect = await optimer('pool', 'inspect', many, '--json', '--verify');
    expect(inspect.code).toBe(0);
    expect(JSON.parse(inspect.stdout).weightParts).toEqual(m.weightParts);
    expect((await optimer('pool', 'inspect', many)).stdout).toMatch(new RegExp(`in ${parts.length} parts`));
    const partBytes = Math.round(0.002 * (1 << 20));
    let alone = 0;
    for (const [i, p] of parts.entries()) {
      const inPart = m.tensors.filter((t) => t.offset !== null && (t.part ?? 0) === i);
      if (inPart.length > 1) expect(p.bytes).toBeLessThanOrEqual(partBytes + 64);
      else if (inPart[0]!.bytes > partBytes) alone++; // a tensor larger than a part has one of its own
    }
    expect(alone).toBeGreaterThan(0);
  });

  it('parts - eval through the CLI scores a multi-part pool exactly as the one-part pool', async () => {
    const scores = [];
    for (const dir of [one, many]) {
      const r = await optimer('eval', '--pool', dir, '--weights', 'ja=0.4,zh=-0.2,code=0.7', ...setArgs(), '--json');
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      scores.push(JSON.parse(r.stdout).scores);
    }
    expect(scores[1]).toEqual(scores[0]);
  });

  it('parts - the merged parts laid end to end are the one-part merge, byte for byte', async () => {
    const [a, b] = [await Pool.open(one), await Pool.open(many)];
    try {
      const w = uniformWeighting(
        new Map([
          ['math', 0.3],
          ['zh', 1.2],
        ]),
      );
      const [pa, pb] = [await mergeToBuffer(a, w), await mergeToBuffer(b, w)];
      expect(pa.length).toBe(1);
      expect(pb.length).toBe(b.manifest.weightParts!.length);
      expect(Buffer.concat(pb).equals(Buffer.from(pa[0]!))).toBe(true);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('parts - an exported model, inline or with external data, reloads with the same scores', async () => {
    const pool = await Pool.open(many);
    try {
      const w = uniformWeighting(
        new Map([
          ['ja', 0.5],
          ['code', -0.25],
        ]),
      );
      const sets = await loadEvalSets(
        Object.entries(family.dev).map(([name, path]) => ({ name, path })),
        pool.manifest.model,
      );
      const expected = (await evaluateMerge(pool, w, sets)).scores.map((s) => s.score);
      for (const externalData of [false, true]) {
        const out = join(tmp, `export-${externalData}.onnx`);
        const files = await exportOnnx(pool, w, out, { externalData });
        expect(files).toEqual(externalData ? [out, `${out}.data`] : [out]);
        if (externalData) expect((await readFile(`${out}.data`)).length).toBe(pool.manifest.weightsBytes);
        const session = await createFileSession(out, 'cpu');
        try {
          const got = (await evaluateSession(session, sets, pool.manifest.model)).map((s) => s.score);
          expect(got).toEqual(expected);
        } finally {
          await session.release();
        }
      }
    } finally {
      await pool.close();
    }
  });

  it('parts - a manifest whose parts do not add up, or whose tensor leaves its part, is refused', async () => {
    const m = await readJson(many);
    const bad = structuredClone(m);
    bad.weightParts![0]! += 64;
    expect(() => parseManifest(bad, 'm.json')).toThrow(/weightParts add up to \d+ bytes, weightsBytes says \d+/);
    const moved = structuredClone(m);
    const t = moved.tensors.find((x) => (x.part ?? 0) === 1)!;
    delete t.part;
    expect(() => parseManifest(moved, 'm.json')).toThrow(new RegExp(`tensor '${t.name}' .* is not inside its part 0`));
    const overlap = structuredClone(m);
    const [x, y] = overlap.tensors.filter((e) => e.offset !== null && (e.part ?? 0) === 0);
    if (x && y) {
      y.offset = x.offset! + 4;
      expect(() => parseManifest(overlap, 'm.json')).toThrow(/overlap in the merged-weights layout/);
    }
    const beyond = structuredClone(m);
    beyond.tensors.find((e) => e.offset !== null)!.part = m.weightParts!.length;
    expect(() => parseManifest(beyond, 'm.json')).toThrow(/is in part \d+, the layout has \d+/);
    // on disk, the pool is refused as it opens
    const dir = join(tmp, 'bad');
    await optimer('pool', 'build', '--base', family.base, ...vectorArgs(), '--out', dir, '--weights-part-mb', '0.002');
    await writeFile(join(dir, MANIFEST_FILE), JSON.stringify(bad));
    const r = await optimer('eval', '--pool', dir, ...setArgs());
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/weightParts add up to/);
  });

  it('parts - a worker runs a study on a one-part pool, then on a multi-part one: the same baselines, bit for bit', async () => {
    const [worker] = procs.startWorkers(cli, nats.url, join(tmp, 'cache'), 1);
    const store = await openLevelStore(join(tmp, 'db'));
    const values: Record<string, number | undefined>[] = [];
    for (const [name, dir] of [
      ['one-part', one],
      ['many-parts', many],
    ] as const) {
      const config = await loadStudyConfig(await writeStudyConfig(join(tmp, `${name}.json`), family, dir, { name, trials: 8 }));
      const coordinator = await Coordinator.start({ config, store, natsUrl: nats.url, log: silentLogger() });
      await coordinator.done();
      expect(coordinator.complete).toBe(true);
      await coordinator.close();
      const trials = await store.listJobs(name, 'TRIAL');
      expect(trials.length).toBe(8);
      expect(trials.every((t) => t.state === 'complete' && Number.isFinite(t.value))).toBe(true);
      values.push(Object.fromEntries(trials.slice(0, 6).map((t) => [t.label, t.value])));
    }
    expect(Object.keys(values[0]!)).toEqual(['base', 'only:ja', 'only:zh', 'only:math', 'only:code', 'average']);
    expect(values[1]).toEqual(values[0]);
    await store.close();
    worker!.kill('SIGTERM');
    await exited(worker!, 20_000);
  }, 180_000);

  it('parts - pool build refuses a tensor larger than one JavaScript buffer, naming it', async () => {
    const dir = join(tmp, 'huge');
    await mkdir(dir, { recursive: true });
    const model = decodeModel(await readFile(family.base), 'base');
    const inits = model.graph!.initializer!;
    const at = inits.findLastIndex((t) => t.dataType === 1); // a float32 initializer
    const last = inits[at]!;
    const elements = MAX_TENSOR_BYTES / 4 + 16; // float32: 64 bytes past the limit (its data is never read)
    inits[at] = setExternal({ ...last, dims: [elements] }, 'huge.bin', 0, elements * 4);
    const base = join(dir, 'base.onnx');
    await writeFile(base, encodeModel(model));
    const [name, ckpt] = Object.entries(family.checkpoints)[0]!;
    await expect(buildPool({ base, vectors: [{ name, path: ckpt }], out: join(dir, 'pool') })).rejects.toThrow(
      new RegExp(`tensor '${last.name}' holds ${elements * 4} bytes, more than one JavaScript buffer takes`),
    );
  });
});
