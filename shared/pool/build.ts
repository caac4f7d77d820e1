import { constants as bufferConstants } from 'node:buffer';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { OptimerError } from '../errors.js';
import { dtypeBytes, isMergeable, type DtypeName } from '../onnx/dtype.js';
import { openOnnxModel, type OnnxModelFile } from '../onnx/model-file.js';
import { unshareInitializers } from '../onnx/unshare.js';
import { encodeModel } from '../onnx/proto.js';
import { setExternal } from '../onnx/build.js';
import { MANIFEST_FILE, SHARDS_DIR, parseManifest, partName, vectorNameSchema, type PoolManifest, type TensorEntry } from './manifest.js';
import { DEFAULT_PIECE_BYTES, DEFAULT_SHARD_BYTES, DEFAULT_WEIGHTS_PART_BYTES } from '../defaults.js';
import { sha256Hex } from '../hash.js';
import { ShardWriter } from './shard-writer.js';
import { HashThreads } from './hash-threads.js';
import { mainThreadHashing, sharedBytes } from './shard-hash.js';
import { compareFixed, compareModels } from './graph-compare.js';
import { DELTA_CHUNK, DeltaKernels } from './delta-kernels.js';
import { describeModel } from './lm-io.js';
import { parseTokenizer } from '../tokenizer.js';

export interface BuildPoolOptions {
  base: string;
  vectors: { name: string; path: string }[];
  out: string;
  shardBytes?: number;
  /** Piece size within shards, each piece hashed in the manifest (default DEFAULT_PIECE_BYTES; 0: no pieces). */
  pieceBytes?: number;
  /** Largest part of the merged-weights layout (default DEFAULT_WEIGHTS_PART_BYTES); a larger tensor gets a part of its own. */
  weightsPartBytes?: number;
  inputName?: string;
  outputName?: string;
  /** Longest sequence the model takes; read from the model when not given. */
  contextLength?: number;
  /** the model's Hugging Face tokenizer.json, stored in the pool for evaluation sets of text */
  tokenizer?: string;
  onProgress?: (done: number, total: number, stage: string) => void;
  /** Threads hashing the shards as they are written (default: one per core, at most 4, none on one core; 0: on the main thread). */
  hashThreads?: number;
  /** Bytes of a tensor handled at a time (default CHUNK_BYTES; tests and benchmarks): rounded to whole kernel calls, DELTA_CHUNK elements. */
  chunkBytes?: number;
}

/** Offsets of tensors in the merged weights' external-data layout (64-byte aligned). */
const ALIGN = 64;

/** The largest tensor a worker can merge: one part is one JavaScript buffer (buffer.constants.MAX_LENGTH). */
export const MAX_TENSOR_BYTES = bufferConstants.MAX_LENGTH;

/**
 * Turns a base model and its CPT checkpoints into a pool: the base weights, each vector
 * v_i = θ_i − θ_base (fp32 arithmetic, stored in the checkpoint's dtype), the graph without
 * weights, and a manifest written last (a pool without manifest.json is not a pool). Reads every
 * file once, tensor by tensor in chunks of at most CHUNK_BYTES: memory is CHUNK_SETS × (K + 1)
 * chunk buffers (plus the inline weights of models without external data, which are in memory as
 * read). The shards are hashed on hashing threads reading those buffers in place (on the main
 * thread where none can start).
 */
export async function buildPool(opts: BuildPoolOptions): Promise<PoolManifest> {
  if (opts.vectors.length === 0) throw new OptimerError('BAD_ARGUMENT', 'pool build: give at least one --vector NAME=CHECKPOINT.onnx');
  const seen = new Set<string>();
  for (const v of opts.vectors) {
    const r = vectorNameSchema.safeParse(v.name);
    if (!r.success) throw new OptimerError('BAD_ARGUMENT', `pool build: vector name '${v.name}': ${r.error.issues[0]?.message}`);
    if (seen.has(v.name)) throw new OptimerError('BAD_ARGUMENT', `pool build: vector '${v.name}' is given twice`);
    seen.add(v.name);
  }
  const shardsDir = join(opts.out, SHARDS_DIR);
  await mkdir(shardsDir, { recursive: true });
  const shardBytes = opts.shardBytes ?? DEFAULT_SHARD_BYTES;
  const pieceBytes = opts.pieceBytes ?? DEFAULT_PIECE_BYTES;
  const progress = opts.onProgress ?? (() => undefined);
  const tokenizer = opts.tokenizer === undefined ? undefined : await readTokenizer(opts.tokenizer);

  const base = unshareInitializers(await openOnnxModel(opts.base));
  try {
    const model = describeModel(base, opts);
    if (tokenizer && model.vocab !== null && tokenizer.maxId >= model.vocab) {
      throw new OptimerError(
        'BAD_ARGUMENT',
        `pool build: --tokenizer ${opts.tokenizer} has token ids up to ${tokenizer.maxId}, the model's vocabulary is ${model.vocab}`,
      );
    }
    const partBytes = opts.weightsPartBytes ?? DEFAULT_WEIGHTS_PART_BYTES;
    if (!(partBytes > 0)) throw new OptimerError('BAD_ARGUMENT', `pool build: the weights part size must be positive, got ${partBytes}`);
    // parts are consecutive ranges of the layout, each starting aligned; no tensor spans two
    let offset = 0;
    const partStarts = [0];
    const tensors: TensorEntry[] = base.initializers.map((t) => {
      const merged = isMergeable(t.dtype);
      if (!merged) return { name: t.name, dtype: t.dtype, shape: t.shape, bytes: t.bytes, merged, offset: null };
      if (t.bytes > MAX_TENSOR_BYTES) {
        throw new OptimerError(
          'BAD_ARGUMENT',
          `pool build: tensor '${t.name}' holds ${t.bytes} bytes, more than one JavaScript buffer takes (${MAX_TENSOR_BYTES}); a worker could not merge it`,
        );
      }
      offset = Math.ceil(offset / ALIGN) * ALIGN;
      const start = partStarts[partStarts.length - 1]!;
      if (offset > start && offset + t.bytes - start > partBytes) partStarts.push(offset);
      const part = partStarts.length - 1;
      const e = { name: t.name, dtype: t.dtype, shape: t.shape, bytes: t.bytes, merged, offset, ...(part > 0 ? { part } : {}) };
      offset += t.bytes;
      return e;
    });
    const weightsBytes = offset;
    const weightParts = partStarts.map((s, i) => (partStarts[i + 1] ?? weightsBytes) - s);
    const total = tensors.length * (1 + opts.vectors.length);
    let done = 0;

    const { baseBlob, vectors, gram } = await writeBlobs(base, opts, shardsDir, shardBytes, pieceBytes, (stage) =>
      progress(++done, total, stage),
    );

    const graph = await graphWithoutWeights(base, tensors);
    const graphSha = sha256Hex(graph);
    await writeFile(join(shardsDir, graphSha), graph);
    if (tokenizer) await writeFile(join(shardsDir, tokenizer.ref.sha256), tokenizer.bytes);

    const draft: PoolManifest = {
      format: 'optimer-pool',
      version: 1,
      graph: { sha256: graphSha, bytes: graph.length },
      model,
      ...(tokenizer ? { tokenizer: tokenizer.ref } : {}),
      tensors,
      weightsBytes,
      ...(weightParts.length > 1 ? { weightParts } : {}),
      base: { source: opts.base, blob: baseBlob },
      vectors,
      gram,
    };
    draft.vectors.forEach((v, i) => {
      v.l2 = Math.sqrt(gram[i]![i]!);
    });
    const manifest = parseManifest(JSON.parse(JSON.stringify(draft)), 'pool build: manifest');
    const tmp = join(opts.out, `.${MANIFEST_FILE}.tmp`);
    await writeFile(tmp, `${JSON.stringify(manifest, null, 1)}\n`);
    await rename(tmp, join(opts.out, MANIFEST_FILE));
    return manifest;
  } finally {
    await base.close();
  }
}

/**
 * The base blob and one blob per vector, tensor by tensor and chunk by chunk: each chunk of a base
 * tensor is read once and the K checkpoints' chunks beside it, the deltas computed in place in
 * buffers reused for every chunk,
 * and the norms and similarities of what is stored (after rounding to the checkpoint's dtype)
 * summed on the way.
 */
async function writeBlobs(
  base: OnnxModelFile,
  opts: BuildPoolOptions,
  shardsDir: string,
  shardBytes: number,
  pieceBytes: number,
  step: (stage: string) => void,
): Promise<{ baseBlob: PoolManifest['base']['blob']; vectors: PoolManifest['vectors']; gram: number[][] }> {
  const ckpts: OnnxModelFile[] = [];
  // the hashing threads start while the checkpoints are opened and compared
  const threads = HashThreads.start(opts.hashThreads);
  const blobWriters: ShardWriter[] = [];
  try {
    for (const v of opts.vectors) {
      const ckpt = unshareInitializers(await openOnnxModel(v.path));
      ckpts.push(ckpt);
      compareModels(base, ckpt);
    }
    const byName = ckpts.map((c) => new Map(c.initializers.map((t) => [t.name, t])));
    const float = base.initializers.filter((t) => isMergeable(t.dtype));
    // every float tensor in chunks, each read, computed, hashed and written while it is in cache
    const chunks = float.flatMap((t, i) => {
      const n = t.bytes / dtypeBytes(t.dtype);
      const per = chunkElements(t.dtype, opts.chunkBytes ?? CHUNK_BYTES);
      const out: Chunk[] = [];
      for (let start = 0; start < n || start === 0; start += per) out.push({ tensor: i, start, count: Math.min(per, n - start) });
      return out;
    });
    // (a large model has more chunks than a spread of arguments takes)
    const chunkBytes = chunks.reduce((m, c) => Math.max(m, c.count * dtypeBytes(float[c.tensor]!.dtype)), 0);
    // in shared memory: the hashing threads read what is written from them without a copy
    const bufs = Array.from({ length: CHUNK_SETS }, () => ({
      base: sharedBytes(chunkBytes),
      ckpts: ckpts.map(() => sharedBytes(chunkBytes)),
    }));
    const kernels = new DeltaKernels(ckpts.length);
    // where threads cannot start, the same hashes on this thread: the same pool, slower
    const hashing = (await threads) ?? mainThreadHashing;
    for (let i = 0; i <= ckpts.length; i++) blobWriters.push(new ShardWriter(shardsDir, shardBytes, pieceBytes, hashing));
    const [baseWriter, ...writers] = blobWriters as [ShardWriter, ...ShardWriter[]];
    // the checkpoints' bytes land in the buffers (copied when inline): the deltas overwrite them
    const readChunk = async (j: number) => {
      const c = chunks[j]!;
      const bt = float[c.tensor]!;
      const set = bufs[j % CHUNK_SETS]!;
      const size = dtypeBytes(bt.dtype);
      const [b, ...cs] = await Promise.all([
        bt.readAt(set.base, c.start * size, c.count * size),
        ...byName.map((m, k) => m.get(bt.name)!.readAt(set.ckpts[k]!, c.start * size, c.count * size)),
      ]);
      return { c, bt, b: b!, cs };
    };
    for (const bt of base.initializers) {
      if (isMergeable(bt.dtype)) continue;
      const b = await bt.read();
      await baseWriter.addTensor(bt.name, b);
      step('base');
      for (const [k, m] of byName.entries()) {
        const ct = m.get(bt.name)!;
        compareFixed(opts.vectors[k]!.path, ct, b, await ct.read());
        step(opts.vectors[k]!.name);
      }
    }
    // reads run CHUNK_SETS − 1 chunks ahead of the one being computed and written
    const ahead: Promise<Awaited<ReturnType<typeof readChunk>>>[] = [];
    const readAhead = (j: number) => {
      if (j >= chunks.length) return;
      const p = readChunk(j);
      // a failed read is reported where it is awaited, or not at all after an earlier failure
      p.catch(() => undefined);
      ahead.push(p);
    };
    for (let j = 0; j < CHUNK_SETS - 1; j++) readAhead(j);
    for (let j = 0; j < chunks.length; j++) {
      const { c, bt, b, cs } = await ahead.shift()!;
      readAhead(j + CHUNK_SETS - 1);
      kernels.deltasInPlace(bt.dtype, b, cs, c.count);
      // the sums are cumulative: the first tensor that makes one non-finite is the one to name
      const bad = kernels.nonFinite()[0];
      if (bad !== undefined) {
        const v = opts.vectors[bad]!;
        throw new OptimerError(
          'BAD_ONNX',
          `pool build: vector '${v.name}' (${v.path}): tensor '${bt.name}' holds NaN or infinite values (in the checkpoint, or in the base): a diverged checkpoint cannot be pooled`,
        );
      }
      const first = c.start === 0;
      const last = c.start + c.count >= bt.bytes / dtypeBytes(bt.dtype);
      const put = (w: ShardWriter, bytes: Uint8Array, stage: string) =>
        (first ? w.addTensor(bt.name, bytes) : w.write(bytes)).then(() => {
          if (last) step(stage);
        });
      // one file per blob: the K + 1 writes run side by side
      await Promise.all([put(baseWriter, b, 'base'), ...writers.map((w, k) => put(w, cs[k]!, opts.vectors[k]!.name))]);
    }
    const baseBlob = await baseWriter.finish();
    const vectors: PoolManifest['vectors'] = [];
    for (const [k, v] of opts.vectors.entries()) vectors.push({ name: v.name, source: v.path, l2: 0, blob: await writers[k]!.finish() });
    return { baseBlob, vectors, gram: kernels.gram() };
  } catch (e) {
    await Promise.all(blobWriters.map((w) => w.abort()));
    throw e;
  } finally {
    await Promise.all([threads.then((t) => t?.close()), ...ckpts.map((c) => c.close())]);
  }
}

/** A range of a float tensor's elements that the build reads, computes, hashes and writes at once. */
interface Chunk {
  /** index among the float tensors */
  tensor: number;
  start: number;
  count: number;
}

/**
 * Bytes of a tensor read and written at a time (per blob): each byte is copied in by read(), turned
 * into a delta, summed into the gram, hashed and copied out by write() while it is in cache, where
 * whole-tensor buffers made the kernel's copies several times slower. A chunk is a whole number of
 * the delta kernels' calls (DELTA_CHUNK elements), so the gram is summed in the same order as over
 * the whole tensor.
 */
export const CHUNK_BYTES = 2 ** 20;

/** Sets of K + 1 chunk buffers: CHUNK_SETS − 1 chunks are read while one is computed and written. */
const CHUNK_SETS = 3;

function chunkElements(dtype: DtypeName, chunkBytes: number): number {
  return DELTA_CHUNK * Math.max(1, Math.floor(chunkBytes / (DELTA_CHUNK * dtypeBytes(dtype))));
}

/** A tokenizer.json read and checked (it loads), with its content address. */
async function readTokenizer(path: string): Promise<{ bytes: Uint8Array; ref: { sha256: string; bytes: number }; maxId: number }> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new OptimerError(
      'BAD_ARGUMENT',
      `pool build: --tokenizer ${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
      {
        cause: e,
      },
    );
  }
  const { maxId } = parseTokenizer(bytes, `pool build: --tokenizer ${path}`);
  return { bytes, ref: { sha256: sha256Hex(bytes), bytes: bytes.length }, maxId };
}

/** Where part `part` starts in the layout: at its first tensor (parts start where a tensor does). */
function partStart(tensors: TensorEntry[], part: number): number {
  if (part === 0) return 0;
  return tensors.find((t) => t.offset !== null && (t.part ?? 0) === part)!.offset!;
}

/** The base graph: float initializers point into the merged-weights layout, the rest inline. */
async function graphWithoutWeights(base: OnnxModelFile, tensors: TensorEntry[]): Promise<Uint8Array> {
  const model = base.model;
  const inits = await Promise.all(
    (model.graph!.initializer ?? []).map(async (t, i) => {
      const e = tensors[i]!;
      const {
        floatData: _f,
        int32Data: _i,
        int64Data: _l,
        doubleData: _d,
        uint64Data: _u,
        externalData: _x,
        dataLocation: _dl,
        ...rest
      } = t;
      if (e.offset === null) return { ...rest, rawData: await base.initializers[i]!.read() };
      const part = e.part ?? 0;
      return setExternal(rest, partName(part), e.offset - partStart(tensors, part), e.bytes);
    }),
  );
  return encodeModel({ ...model, graph: { ...model.graph, initializer: inits } });
}
