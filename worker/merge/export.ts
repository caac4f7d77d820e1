import { open, writeFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { stringify } from 'yaml';
import { decodeModel, encodeModel, type MergeWeights, type Pool, setExternal } from '../../shared/index.js';
import { mergeToBuffer, mergeWeights } from './merge.js';

/** Merged models up to this size are written as one self-contained .onnx file. */
export const INLINE_LIMIT_BYTES = 1 << 30;

/**
 * Writes θ(w) as an ONNX model onnxruntime loads: one file when small, else the graph plus
 * `<out>.data` external data (streamed: the merged weights are never all in memory).
 */
export async function exportOnnx(
  pool: Pool,
  weights: MergeWeights,
  out: string,
  options: { externalData?: boolean } = {},
): Promise<string[]> {
  const model = decodeModel(await pool.graphBytes(), `${pool.label}: graph`);
  const tensors = pool.manifest.tensors;
  const external = options.externalData ?? pool.manifest.weightsBytes > INLINE_LIMIT_BYTES;
  const inits = model.graph!.initializer ?? [];
  if (!external) {
    const merged = await mergeToBuffer(pool, weights);
    model.graph!.initializer = inits.map((t, i) => {
      const e = tensors[i]!;
      if (e.offset === null) return t;
      const { externalData: _e, dataLocation: _l, ...rest } = t;
      return { ...rest, rawData: merged.subarray(e.offset, e.offset + e.bytes) };
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
    await mergeWeights(pool, weights, async (offset, bytes) => {
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
 * normalisation), so users rebuild it from their original checkpoints.
 */
export async function exportMergekit(pool: Pool, weights: MergeWeights, out: string, options: MergekitOptions = {}): Promise<string[]> {
  const m = pool.manifest;
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
