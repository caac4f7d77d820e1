import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { OptimerError } from '../errors.js';
import { dtypeBytes } from '../onnx/dtype.js';
import { pieceCount } from '../pieces.js';
import { formatIssues } from '../validate.js';

/**
 * A pool is `manifest.json` plus content-addressed shards (`shards/<sha256>`). Each blob (the
 * base weights, and each vector's deltas θ_i − θ_base) is a byte stream cut into shards; tensors
 * sit at offsets in their blob's stream. The graph without weights is a shard too: its float
 * initializers point into one external-data layout that a merge fills in, cut into parts of at
 * most `pool build --weights-part-mb` (`weights.bin`, `weights-1.bin`, ...; one JavaScript buffer
 * each, so models over 4 GiB are merged in memory all the same); the non-float ones (shape
 * constants and the like) stay inline, where ONNX Runtime's shape inference needs them.
 * Manifests travel between machines, so they are validated like any other input.
 */
export const MANIFEST_FILE = 'manifest.json';
export const SHARDS_DIR = 'shards';
/** The external-data file name the pool's graph refers to; a merge supplies its bytes. */
export const WEIGHTS_LOCATION = 'weights.bin';

/**
 * The external-data file name of part `i` of the merged-weights layout: part 0 is
 * `weights.bin` (WEIGHTS_LOCATION, so one-part pools are as before), then `weights-1.bin`, ...
 */
export function partName(i: number): string {
  return i === 0 ? WEIGHTS_LOCATION : `weights-${i}.bin`;
}

const sha256 = z.string().regex(/^[0-9a-f]{64}$/, 'expected a lowercase hex sha256');
const count = z.number().int().nonnegative();
const dtype = z.enum([
  'float32',
  'float16',
  'bfloat16',
  'float64',
  'uint8',
  'int8',
  'uint16',
  'int16',
  'int32',
  'int64',
  'bool',
  'uint32',
  'uint64',
]);
const vectorName = z
  .string()
  .regex(/^[A-Za-z0-9_.-]{1,64}$/, 'expected 1-64 letters, digits, ".", "_" or "-"')
  .refine((n) => !/^\.+$/.test(n), 'expected a name, not a path component like "." or ".."');

const shardRef = z
  .object({
    sha256,
    offset: count,
    bytes: count,
    /** the shard cut into pieces of this size (the last shorter), each hashed; absent: fetched whole */
    pieceBytes: count.positive().optional(),
    /** sha256 of each piece, in order */
    pieces: z.array(sha256).optional(),
  })
  .strict();
const blob = z
  .object({
    bytes: count,
    shards: z.array(shardRef),
    /** tensor name → offset in this blob */
    tensors: z.record(z.string(), count),
  })
  .strict();

const idType = z.enum(['int64', 'int32']);

/**
 * What a worker feeds the model, found in the graph at `pool build`. The fields after
 * `contextLength` came with the KV-cache layouts (Optimum, onnxruntime-genai); a manifest without
 * them means the plain layout: int64 `input` (+ optional int64 mask) → `output`.
 */
const modelSchema = z
  .object({
    /** the token ids input */
    input: z.string(),
    /** the logits output (the only output fetched) */
    output: z.string(),
    /** fed 1 on tokens, 0 on padding */
    attentionMask: z.string().nullable(),
    vocab: count.nullable(),
    contextLength: count.nullable(),
    /** element type of `input`; absent: int64 */
    inputType: idType.optional(),
    /** element type of `attentionMask`; absent: int64 */
    attentionMaskType: idType.optional(),
    /** fed 0..len−1 on each row's tokens, 0 on padding */
    positionIds: z.object({ name: z.string(), type: idType }).strict().optional(),
    /** KV-cache inputs `[batch, heads, past_len, headDim]`, fed empty (past length 0) */
    past: z
      .array(
        z
          .object({
            name: z.string(),
            type: z.enum(['float32', 'float16', 'bfloat16']),
            heads: count.positive(),
            headDim: count.positive(),
          })
          .strict(),
      )
      .optional(),
    /** bool [1] input of a merged decoder, fed false (the branch without a cache) */
    useCacheBranch: z.string().optional(),
  })
  .strict();

const manifestSchema = z
  .object({
    format: z.literal('optimer-pool'),
    version: z.literal(1),
    graph: z.object({ sha256, bytes: count }).strict(),
    model: modelSchema,
    /** the model's Hugging Face tokenizer.json, a shard like the graph (absent: sets are token ids only) */
    tokenizer: z.object({ sha256, bytes: count }).strict().optional(),
    tensors: z.array(
      z
        .object({
          name: z.string(),
          dtype,
          shape: z.array(count),
          bytes: count,
          merged: z.boolean(),
          /** offset in the merged-weights layout; null for non-float tensors, kept inline in the graph */
          offset: count.nullable(),
          /** the part of the layout holding the tensor (see `weightParts`); absent: 0 */
          part: count.optional(),
        })
        .strict(),
    ),
    weightsBytes: count,
    /**
     * The layout cut into consecutive parts, their sizes in order (summing to `weightsBytes`),
     * each handed to ONNX Runtime as its own buffer (`partName(i)`); no tensor spans two. Absent:
     * one part, `[weightsBytes]`.
     */
    weightParts: z.array(count).optional(),
    base: z.object({ source: z.string(), blob }).strict(),
    vectors: z.array(z.object({ name: vectorName, source: z.string(), l2: z.number(), blob }).strict()),
    /** Gram matrix of the vectors (dot products), in `vectors` order. */
    gram: z.array(z.array(z.number())),
  })
  .strict();

export type PoolManifest = z.infer<typeof manifestSchema>;
export type BlobRef = z.infer<typeof blob>;
export type ShardRef = z.infer<typeof shardRef>;
export type TensorEntry = PoolManifest['tensors'][number];
export type ModelDescription = PoolManifest['model'];
/** What feeding the model takes: the model description less its limits. */
export type ModelIo = Omit<ModelDescription, 'vocab' | 'contextLength'>;
export type PastInput = NonNullable<ModelDescription['past']>[number];
export type IdType = z.infer<typeof idType>;
export type VectorEntry = PoolManifest['vectors'][number];
export { vectorName as vectorNameSchema };

/** Parses and checks a manifest: schema, then the arithmetic the schema cannot see. */
export function parseManifest(json: unknown, where: string): PoolManifest {
  const r = manifestSchema.safeParse(json);
  if (!r.success) throw new OptimerError('BAD_POOL', formatIssues(where, r.error));
  const m = r.data;
  const fail = (msg: string): never => {
    throw new OptimerError('BAD_POOL', `${where}: ${msg}`);
  };
  const checkBlob = (b: BlobRef, label: string, tensors: TensorEntry[]): void => {
    let off = 0;
    for (const [i, s] of b.shards.entries()) {
      if (s.offset !== off) fail(`${label}.shards[${i}] starts at ${s.offset}, expected ${off}`);
      if ((s.pieceBytes === undefined) !== (s.pieces === undefined)) fail(`${label}.shards[${i}]: pieceBytes and pieces come together`);
      if (s.pieceBytes !== undefined && s.pieces!.length !== pieceCount(s.bytes, s.pieceBytes))
        fail(
          `${label}.shards[${i}]: ${s.pieces!.length} piece hashes, expected ${pieceCount(s.bytes, s.pieceBytes)} for ${s.bytes} bytes in pieces of ${s.pieceBytes}`,
        );
      off += s.bytes;
    }
    if (off !== b.bytes) fail(`${label}: shards hold ${off} bytes, blob says ${b.bytes}`);
    for (const t of tensors) {
      const at = b.tensors[t.name];
      if (at === undefined) fail(`${label}: tensor '${t.name}' is missing`);
      else if (at + t.bytes > b.bytes) fail(`${label}: tensor '${t.name}' runs past the end of the blob`);
    }
  };
  const parts = m.weightParts ?? [m.weightsBytes];
  if (parts.length === 0) fail('weightParts is empty');
  const partsSum = parts.reduce((a, b) => a + b, 0);
  if (partsSum !== m.weightsBytes) fail(`weightParts add up to ${partsSum} bytes, weightsBytes says ${m.weightsBytes}`);
  const starts = partStarts(parts);
  const names = new Set<string>();
  for (const t of m.tensors) {
    if (names.has(t.name)) fail(`tensor '${t.name}' is listed twice`);
    names.add(t.name);
    // the bytes a worker reads and hands ONNX Runtime under this shape: they must agree
    const elements = t.shape.reduce((n, d) => n * d, 1);
    const expected = elements * dtypeBytes(t.dtype);
    if (!Number.isSafeInteger(expected) || expected !== t.bytes)
      fail(`tensor '${t.name}': shape [${t.shape.join(', ')}] of ${t.dtype} is ${expected} bytes, the manifest says ${t.bytes}`);
    if (t.merged !== (t.offset !== null)) fail(`tensor '${t.name}': merged tensors, and only they, have a layout offset`);
    if (t.offset === null) {
      if (t.part !== undefined) fail(`tensor '${t.name}': only merged tensors have a part`);
      continue;
    }
    if (t.offset + t.bytes > m.weightsBytes) fail(`tensor '${t.name}' runs past weightsBytes`);
    const p = t.part ?? 0;
    if (p >= parts.length) fail(`tensor '${t.name}' is in part ${p}, the layout has ${parts.length}`);
    if (t.offset < starts[p]! || t.offset + t.bytes > starts[p]! + parts[p]!)
      fail(
        `tensor '${t.name}' (bytes ${t.offset}..${t.offset + t.bytes}) is not inside its part ${p} (${starts[p]}..${starts[p]! + parts[p]!})`,
      );
  }
  const laid = m.tensors.filter((t) => t.offset !== null && t.bytes > 0).sort((a, b) => a.offset! - b.offset!);
  for (let i = 1; i < laid.length; i++) {
    const [a, b] = [laid[i - 1]!, laid[i]!];
    if (a.offset! + a.bytes > b.offset!) fail(`tensors '${a.name}' and '${b.name}' overlap in the merged-weights layout`);
  }
  checkBlob(m.base.blob, 'base.blob', m.tensors);
  const merged = m.tensors.filter((t) => t.merged);
  const vnames = new Set<string>();
  for (const [i, v] of m.vectors.entries()) {
    if (vnames.has(v.name)) fail(`vector '${v.name}' is listed twice`);
    vnames.add(v.name);
    checkBlob(v.blob, `vectors[${i}].blob`, merged);
  }
  if (m.gram.length !== m.vectors.length || m.gram.some((row) => row.length !== m.vectors.length)) {
    fail(`gram must be ${m.vectors.length}×${m.vectors.length}`);
  }
  return m;
}

function partStarts(parts: readonly number[]): number[] {
  let at = 0;
  return parts.map((b) => {
    const s = at;
    at += b;
    return s;
  });
}

/** One part of the merged-weights layout: where it starts in the layout, and its size. */
export interface WeightPart {
  start: number;
  bytes: number;
}

/** The parts of a (parsed) manifest's merged-weights layout, in order. */
export function weightParts(m: PoolManifest): WeightPart[] {
  const parts = m.weightParts ?? [m.weightsBytes];
  const starts = partStarts(parts);
  return parts.map((bytes, i) => ({ start: starts[i]!, bytes }));
}

export async function readManifest(dir: string): Promise<PoolManifest> {
  const path = join(dir, MANIFEST_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new OptimerError('BAD_POOL', `${dir}: not a pool (no ${MANIFEST_FILE}; build one with 'optimer pool build')`, { cause: e });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new OptimerError('BAD_POOL', `${path}: not valid JSON (${(e as Error).message})`, { cause: e });
  }
  return parseManifest(json, path);
}
