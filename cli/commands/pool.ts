import type { Command } from 'commander';
import {
  buildPool,
  cosineMatrix,
  DEFAULT_SHARD_BYTES,
  DEFAULT_PIECE_BYTES,
  DEFAULT_WEIGHTS_PART_BYTES,
  Pool,
  type PoolManifest,
} from '../../shared/index.js';
import { collect, formatBytes, parseNamed, parseNumberOption, printJson, progress, table } from '../output.js';

export function registerPool(program: Command, run: (fn: () => Promise<void>, json?: boolean) => Promise<void>): void {
  const pool = program.command('pool').description('build and inspect vector pools');

  pool
    .command('build')
    .description('turn a base model and its CPT checkpoints into a pool of distribution vectors')
    .requiredOption('--base <model.onnx>', 'the base model (ONNX, fp32/fp16/bf16, inline or external data)')
    .option('--vector <NAME=CKPT.onnx>', 'a CPT checkpoint and the name of its vector (repeat)', collect)
    .requiredOption('--out <dir>', 'pool directory to write')
    .option('--shard-mb <n>', 'shard size in MiB', String(DEFAULT_SHARD_BYTES / (1 << 20)))
    .option(
      '--piece-mb <n>',
      'piece size in MiB: the unit workers verify and share with each other (0: shards are fetched whole)',
      String(DEFAULT_PIECE_BYTES / (1 << 20)),
    )
    .option(
      '--weights-part-mb <n>',
      'largest part of the merged weights, in MiB: each part is one buffer handed to ONNX Runtime',
      String(DEFAULT_WEIGHTS_PART_BYTES / (1 << 20)),
    )
    .option('--input-name <name>', 'graph input holding token ids', 'input_ids')
    .option('--output-name <name>', 'graph output holding logits', 'logits')
    .option('--context-length <n>', 'longest sequence the model takes (default: read from the model)')
    .option('--tokenizer <tokenizer.json>', 'the model\'s Hugging Face tokenizer.json, for evaluation sets of {"text": ...} lines')
    .option('--json', 'print the manifest summary as JSON')
    .action((o) =>
      run(async () => {
        const vectors = parseNamed(o.vector, '--vector').map(({ name, value }) => ({ name, path: value }));
        const bar = progress('pool build', !o.json);
        const manifest = await buildPool({
          base: o.base,
          vectors,
          out: o.out,
          shardBytes: Math.round(parseNumberOption(o.shardMb, '--shard-mb', { min: 1 / 1024 }) * (1 << 20)),
          pieceBytes: Math.round(parseNumberOption(o.pieceMb, '--piece-mb', { min: 0 }) * (1 << 20)),
          weightsPartBytes: Math.round(parseNumberOption(o.weightsPartMb, '--weights-part-mb', { min: 1 / (1 << 20) }) * (1 << 20)),
          inputName: o.inputName,
          outputName: o.outputName,
          ...(o.contextLength !== undefined
            ? { contextLength: parseNumberOption(o.contextLength, '--context-length', { min: 2, integer: true }) }
            : {}),
          ...(o.tokenizer !== undefined ? { tokenizer: o.tokenizer } : {}),
          onProgress: (done, total, stage) => bar.update(done, total, stage),
        });
        bar.stop();
        const summary = summarize(manifest, o.out);
        if (o.json) printJson(summary);
        else process.stdout.write(`${renderSummary(summary)}\n`);
      }, o.json),
    );

  pool
    .command('inspect')
    .description("print a pool's sizes, vector norms and pairwise cosine similarities")
    .argument('<dir>', 'pool directory')
    .option('--verify', 're-hash every shard')
    .option('--json', 'print as JSON')
    .action((dir: string, o) =>
      run(async () => {
        const p = await Pool.open(dir);
        try {
          if (o.verify) await p.verify();
        } finally {
          await p.close();
        }
        const summary = { ...summarize(p.manifest, dir), verified: Boolean(o.verify) };
        if (o.json) printJson(summary);
        else process.stdout.write(renderSummary(summary) + (o.verify ? '\nall shards verified (sha256)\n' : '\n'));
      }, o.json),
    );
}

export interface PoolSummary {
  pool: string;
  model: PoolManifest['model'];
  tensors: { total: number; merged: number };
  parameters: number;
  weightsBytes: number;
  /** sizes of the merged-weights layout's parts, each one buffer handed to ONNX Runtime */
  weightParts: number[];
  baseBytes: number;
  shards: number;
  /** bytes of the stored tokenizer.json; null: built without --tokenizer */
  tokenizerBytes: number | null;
  vectors: { name: string; source: string; bytes: number; l2: number }[];
  cosine: { names: string[]; matrix: number[][] };
}

export function summarize(m: PoolManifest, dir: string): PoolSummary {
  const merged = m.tensors.filter((t) => t.merged);
  const shards = new Set([
    m.graph.sha256,
    ...(m.tokenizer ? [m.tokenizer.sha256] : []),
    ...[m.base.blob, ...m.vectors.map((v) => v.blob)].flatMap((b) => b.shards.map((s) => s.sha256)),
  ]);
  return {
    pool: dir,
    model: m.model,
    tensors: { total: m.tensors.length, merged: merged.length },
    parameters: merged.reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0),
    weightsBytes: m.weightsBytes,
    weightParts: m.weightParts ?? [m.weightsBytes],
    baseBytes: m.base.blob.bytes,
    shards: shards.size,
    tokenizerBytes: m.tokenizer?.bytes ?? null,
    vectors: m.vectors.map((v) => ({ name: v.name, source: v.source, bytes: v.blob.bytes, l2: v.l2 })),
    cosine: { names: m.vectors.map((v) => v.name), matrix: cosineMatrix(m.gram) },
  };
}

export function renderSummary(s: PoolSummary): string {
  const lines = [
    `pool ${s.pool}`,
    `  model: input '${s.model.input}', output '${s.model.output}', vocab ${s.model.vocab ?? '?'}, context ${s.model.contextLength ?? '?'}`,
    `  ${s.tensors.merged} of ${s.tensors.total} tensors merged, ${s.parameters.toLocaleString('en-US')} parameters; merged weights ${formatBytes(s.weightsBytes)}${s.weightParts.length > 1 ? ` in ${s.weightParts.length} parts` : ''}, base ${formatBytes(s.baseBytes)}, ${s.shards} shards`,
    `  tokenizer: ${s.tokenizerBytes === null ? "none (evaluation sets are token ids only; add one with 'pool build --tokenizer')" : `tokenizer.json, ${formatBytes(s.tokenizerBytes)}`}`,
    '',
    table([['vector', 'size', 'L2 norm', 'source'], ...s.vectors.map((v) => [v.name, formatBytes(v.bytes), v.l2, v.source])]),
    '',
    'cosine similarity',
    table([['', ...s.cosine.names], ...s.cosine.matrix.map((row, i) => [s.cosine.names[i]!, ...row.map((c) => c.toFixed(3))])]),
  ];
  return lines.join('\n');
}
