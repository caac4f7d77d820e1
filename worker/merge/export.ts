import { open, writeFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { stringify } from 'yaml';
import { decodeModel, encodeModel, OptimerError, type Pool, setExternal, type TensorWeighting, weightParts } from '../../shared/index.js';
import { mergeToBuffer, mergeWeights } from './merge.js';

/** Merged models up to this size are written as one self-contained .onnx file. */
export const INLINE_LIMIT_BYTES = 1 << 30;

/**
 * Writes the merge `weighting` gives as an ONNX model onnxruntime loads: one file when small, else the graph plus
 * `<out>.data` external data (streamed: the merged weights are never all in memory). A pool whose layout is in
 * several parts still exports one data file: the parts are consecutive ranges of one layout, so each tensor sits
 * at its layout offset (`tensors[i].offset`) in `<out>.data`.
 */
export async function exportOnnx(
  pool: Pool,
  weighting: TensorWeighting,
  out: string,
  options: { externalData?: boolean } = {},
): Promise<string[]> {
  const model = decodeModel(await pool.graphBytes(), `${pool.label}: graph`);
  const tensors = pool.manifest.tensors;
  const external = options.externalData ?? pool.manifest.weightsBytes > INLINE_LIMIT_BYTES;
  const inits = model.graph!.initializer ?? [];
  if (!external) {
    const merged = await mergeToBuffer(pool, weighting);
    const parts = weightParts(pool.manifest);
    model.graph!.initializer = inits.map((t, i) => {
      const e = tensors[i]!;
      if (e.offset === null) return t;
      const { externalData: _e, dataLocation: _l, ...rest } = t;
      const part = e.part ?? 0;
      const at = e.offset - parts[part]!.start;
      return { ...rest, rawData: merged[part]!.subarray(at, at + e.bytes) };
    });
    await writeFile(out, encodeModel(model));
    return [out];
  }
  const dataPath = `${out}.data`;
  model.graph!.initializer = inits.map((t, i) => {
    const e = tensors[i]!;
    return e.offset === null ? t : setExternal(t, basename(dataPath), e.offset, e.bytes);
  });
  const fh = await open(dataPath, 'w');
  try {
    await fh.truncate(pool.manifest.weightsBytes);
    await mergeWeights(pool, weighting, async (offset, bytes) => {
      await fh.write(bytes, 0, bytes.length, offset);
    });
  } finally {
    await fh.close();
  }
  await writeFile(out, encodeModel(model));
  return [out, dataPath];
}

export interface MergekitOptions {
  /** Hugging Face repo or path of the base model (default: the pool's base source). */
  baseModel?: string;
  /** vector name → Hugging Face repo or path of its CPT checkpoint */
  models?: ReadonlyMap<string, string>;
}

/**
 * The same merge as a mergekit `task_arithmetic` config (θ_base + Σ w_i (θ_i − θ_base), no
 * normalisation), so users rebuild it from their original checkpoints. task_arithmetic takes one
 * weight per model: a weighting that weighs a vector differently on different tensors is refused.
 */
export async function exportMergekit(
  pool: Pool,
  weighting: TensorWeighting,
  out: string,
  options: MergekitOptions = {},
): Promise<string[]> {
  const m = pool.manifest;
  const weights = perModelWeights(pool, weighting);
  const floatTypes = new Set(m.tensors.filter((t) => t.merged).map((t) => t.dtype));
  const dtype = floatTypes.size === 1 ? [...floatTypes][0]! : 'float32';
  const config = {
    merge_method: 'task_arithmetic',
    base_model: options.baseModel ?? m.base.source,
    models: m.vectors
      .filter((v) => (weights.get(v.name) ?? 0) !== 0)
      .map((v) => ({ model: options.models?.get(v.name) ?? v.source, parameters: { weight: weights.get(v.name)! } })),
    parameters: { normalize: false },
    dtype,
  };
  const header =
    `# optimer merge of pool ${m.graph.sha256.slice(0, 12)}: ${m.vectors.map((v) => `${v.name}=${weights.get(v.name) ?? 0}`).join(', ')}\n` +
    '# Point base_model and each model at your Hugging Face checkpoints (or pass --hf NAME=REPO), then:\n' +
    '#   mergekit-yaml this.yaml ./merged\n';
  await writeFile(out, header + stringify(config));
  return [out];
}

/** One weight per vector, the same on every merged tensor, or a refusal naming where it differs. */
function perModelWeights(pool: Pool, weighting: TensorWeighting): ReadonlyMap<string, number> {
  for (const name of weighting.vectors) pool.vector(name); // unknown vector → BAD_ARGUMENT
  if (new Set(weighting.vectors).size !== weighting.vectors.length)
    throw new OptimerError('BAD_ARGUMENT', `mergekit export: a vector is weighted twice (${weighting.vectors.join(', ')})`);
  const merged = pool.manifest.tensors.filter((t) => t.merged);
  const first = merged[0];
  if (!first) return new Map();
  const w = weighting.weightsFor(first);
  for (const t of merged) {
    const x = weighting.weightsFor(t);
    if (x.length !== weighting.vectors.length || !x.every(Number.isFinite))
      throw new RangeError(
        `mergekit export: tensor '${t.name}' needs one finite weight per vector (${weighting.vectors.length}), got [${x.join(', ')}]`,
      );
    const k = weighting.vectors.findIndex((_, j) => x[j] !== w[j]);
    if (k >= 0) {
      const v = weighting.vectors[k]!;
      throw new OptimerError(
        'BAD_ARGUMENT',
        `mergekit export: vector '${v}' weighs ${w[k]} on tensor '${first.name}' but ${x[k]} on '${t.name}'; mergekit's task_arithmetic takes one weight per model (export ONNX instead)`,
      );
    }
  }
  return new Map(weighting.vectors.map((v, j) => [v, w[j]!]));
}
