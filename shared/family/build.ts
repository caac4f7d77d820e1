import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Rng } from '../rng.js';
import { writeModel } from '../onnx/build.js';
import { openOnnxModel } from '../onnx/model-file.js';
import { decodeFloats } from '../onnx/dtype.js';
import { cloneParams, paramNames, roundToFloat32, type FamilyParams, type FamilyShape } from './model.js';
import { makeSources, sampleSequences } from './corpora.js';
import { initParams, train } from './train.js';
import { familyToOnnx } from './to-onnx.js';

export const FAMILY_DOMAINS = ['ja', 'zh', 'math', 'code'] as const;

export const DEFAULT_FAMILY_SHAPE: FamilyShape = { vocab: 64, dim: 16, hidden: 48, contextLength: 64 };

export interface FamilyOptions {
  seed: number;
  /** 'float16' stores the weights in half precision (cast to float32 in the graph). */
  dtype?: 'float32' | 'float16';
  /** Write initializers to `<model>.onnx.data` files, as torch.onnx.export does past 2 GB. */
  externalData?: boolean;
}

export interface FamilyFiles {
  dir: string;
  shape: FamilyShape;
  base: string;
  checkpoints: Record<string, string>;
  dev: Record<string, string>;
  test: Record<string, string>;
}

const SEQ_MIN = 8;
/** Domains get different amounts of continued training, so their vectors differ in length. */
const CPT_STEPS = [80, 120, 180, 260];

/**
 * Generates the built-in model family in `dir`: a base model trained on a general corpus, one
 * continued-pre-training checkpoint per domain (real Adam steps from the base on that domain's
 * corpus), and dev/test sets per domain as JSONL. Deterministic in `seed`.
 */
export async function buildFamily(dir: string, options: FamilyOptions): Promise<FamilyFiles> {
  const shape = DEFAULT_FAMILY_SHAPE;
  const { seed } = options;
  await mkdir(join(dir, 'data'), { recursive: true });
  const sources = makeSources({ vocab: shape.vocab, common: 16, domains: [...FAMILY_DOMAINS] }, seed);
  const rng = new Rng(seed + 1);

  const general = sampleSequences(sources.general, shape.vocab, 400, SEQ_MIN, shape.contextLength, rng);
  const base = initParams(shape, rng);
  train(shape, base, general, { steps: 500, batch: 8, lr: 0.02, seed: seed + 2 });

  const files: FamilyFiles = { dir, shape, base: join(dir, 'base.onnx'), checkpoints: {}, dev: {}, test: {} };
  const checkpoints: Record<string, FamilyParams> = {};
  for (const [d, src] of sources.domains.entries()) {
    const name = FAMILY_DOMAINS[d]!;
    const trainSet = sampleSequences(src, shape.vocab, 200, SEQ_MIN, shape.contextLength, rng);
    const ckpt = cloneParams(base);
    train(shape, ckpt, trainSet, { steps: CPT_STEPS[d]!, batch: 8, lr: 0.005, seed: seed + 10 + d });
    checkpoints[name] = ckpt;
    files.checkpoints[name] = join(dir, `cpt-${name}.onnx`);
    for (const split of ['dev', 'test'] as const) {
      const path = join(dir, 'data', `${name}.${split}.jsonl`);
      const seqs = sampleSequences(src, shape.vocab, 48, 2, shape.contextLength, rng);
      await writeFile(path, `${seqs.map((ids) => JSON.stringify({ input_ids: ids })).join('\n')}\n`);
      files[split][name] = path;
    }
  }
  await writeModels(files, base, checkpoints, options);
  await writeFile(join(dir, 'family.json'), `${JSON.stringify({ seed, ...files }, null, 2)}\n`);
  return files;
}

async function writeModels(
  files: FamilyFiles,
  base: FamilyParams,
  checkpoints: Record<string, FamilyParams>,
  options: Omit<FamilyOptions, 'seed'>,
): Promise<void> {
  const write = (path: string, p: FamilyParams, label: string): Promise<void> =>
    writeModel(path, familyToOnnx(files.shape, p, options.dtype ?? 'float32', label), { externalData: options.externalData ?? false });
  await write(files.base, base, 'base');
  for (const [name, path] of Object.entries(files.checkpoints)) await write(path, checkpoints[name]!, `cpt-${name}`);
}

/**
 * Writes the same trained family in another storage format (fp16 weights, external data) into
 * `dir`, sharing the evaluation sets: exercises the import paths without training again.
 */
export async function writeFamilyVariant(src: FamilyFiles, dir: string, options: Omit<FamilyOptions, 'seed'>): Promise<FamilyFiles> {
  await mkdir(dir, { recursive: true });
  const files: FamilyFiles = {
    ...src,
    dir,
    base: join(dir, 'base.onnx'),
    checkpoints: Object.fromEntries(Object.keys(src.checkpoints).map((n) => [n, join(dir, `cpt-${n}.onnx`)])),
  };
  const ckpts: Record<string, FamilyParams> = {};
  for (const [n, path] of Object.entries(src.checkpoints)) ckpts[n] = await loadFamilyParams(path);
  await writeModels(files, await loadFamilyParams(src.base), ckpts, options);
  return files;
}

/** Reads a family model's weights back from its ONNX file (for reference computations). */
export async function loadFamilyParams(path: string): Promise<FamilyParams> {
  const file = await openOnnxModel(path);
  try {
    const out: Partial<FamilyParams> = {};
    for (const init of file.initializers) {
      if (!(paramNames as readonly string[]).includes(init.name)) continue;
      const n = init.shape.reduce((a, b) => a * b, 1);
      const f = new Float32Array(n);
      decodeFloats(init.dtype, await init.read(), f, n);
      out[init.name as keyof FamilyParams] = Float64Array.from(f);
    }
    for (const pn of paramNames) if (!out[pn]) throw new Error(`${path}: missing family parameter ${pn}`);
    return roundToFloat32(out as FamilyParams);
  } finally {
    await file.close();
  }
}
