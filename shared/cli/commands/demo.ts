import { existsSync } from 'node:fs';
import { readFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { baselineMerges, type NamedWeights } from '../../../coordinator/baselines.js';
import { exportMergekit, exportOnnx } from '../../../worker/merge/export.js';
import { evaluateMerge, evaluateSession, loadEvalSets, weightedMean, type LoadedEvalSet } from '../../../worker/eval/evaluate.js';
import { createFileSession } from '../../../worker/eval/session.js';
import { buildFamily, FAMILY_DOMAINS, type FamilyFiles } from '../../family/build.js';
import { buildPool } from '../../pool/build.js';
import { Pool } from '../../pool/reader.js';
import { Rng } from '../../rng.js';
import { mixtureRatios, type MergeWeights } from '../../weights.js';
import { fmt, parseNumberOption, printJson, progress, table } from '../output.js';
import { renderSummary, summarize } from './pool.js';

type Run = (fn: () => Promise<void>, json?: boolean) => Promise<void>;

/** Builds the family unless `dir` already holds the one for this seed. */
export async function ensureFamily(dir: string, seed: number): Promise<FamilyFiles> {
  const meta = join(dir, 'family.json');
  if (existsSync(meta)) {
    const f = JSON.parse(await readFile(meta, 'utf8')) as FamilyFiles & { seed: number };
    const files = [f.base, ...Object.values(f.checkpoints ?? {}), ...Object.values(f.dev ?? {}), ...Object.values(f.test ?? {})];
    if (f.seed === seed && files.length > 1 && files.every((p) => existsSync(p))) return f;
  }
  return buildFamily(dir, { seed });
}

export function registerDemo(program: Command, run: Run): void {
  program
    .command('demo')
    .description('build the built-in model family and a pool, evaluate the baselines and a coarse search, export the best merge')
    .option('--out <dir>', 'working directory', '.optimer/demo')
    .option('--seed <n>', 'seed of the model family and of the search', '1')
    .option('--json', 'print the results as JSON')
    .action((o) =>
      run(async () => {
        const seed = parseNumberOption(o.seed, '--seed', { min: 0, integer: true });
        const say = (s: string): void => {
          if (!o.json) process.stdout.write(s + '\n');
        };
        await mkdir(o.out, { recursive: true });
        const t0 = performance.now();
        say(`building the model family (seed ${seed}) in ${join(o.out, 'family')} ...`);
        const family = await ensureFamily(join(o.out, 'family'), seed);
        const poolDir = join(o.out, 'pool');
        const manifest = await buildPool({
          base: family.base,
          vectors: FAMILY_DOMAINS.map((name) => ({ name, path: family.checkpoints[name]! })),
          out: poolDir,
        });
        say(renderSummary(summarize(manifest, poolDir)) + '\n');

        const pool = await Pool.open(poolDir);
        try {
          const names = manifest.vectors.map((v) => v.name);
          const dev = await loadEvalSets(names.map((n) => ({ name: n, path: family.dev[n]! })), manifest.model);
          const test = await loadEvalSets(names.map((n) => ({ name: n, path: family.test[n]! })), manifest.model);
          // Until the TPE search lands, a coarse search: uniform scales and random weights.
          const rng = new Rng(seed);
          const candidates: NamedWeights[] = [
            ...baselineMerges(names),
            ...[0.3, 0.4, 0.5, 0.6].map((c) => ({ label: `uniform ${c}`, weights: new Map(names.map((n) => [n, c])) })),
            ...Array.from({ length: 12 }, (_, i) => ({ label: `random #${i + 1}`, weights: new Map(names.map((n) => [n, Math.round((rng.uniform() * 0.9 - 0.1) * 100) / 100])) })),
          ];
          const bar = progress('evaluating', !o.json);
          const results: { label: string; weights: Record<string, number>; dev: Record<string, number>; mean: number }[] = [];
          for (const [i, c] of candidates.entries()) {
            const r = await evaluateMerge(pool, c.weights, dev);
            results.push({
              label: c.label,
              weights: Object.fromEntries(names.map((n) => [n, c.weights.get(n) ?? 0])),
              dev: Object.fromEntries(r.scores.map((s) => [s.name, s.score])),
              mean: r.mean,
            });
            bar.update(i + 1, candidates.length, c.label);
          }
          bar.stop();
          const best = results.reduce((a, b) => (b.mean < a.mean ? b : a));
          const bestWeights = new Map(Object.entries(best.weights));
          say(`dev NLL (nats, lower is better) of ${results.length} merges:`);
          say(table([
            ['merge', ...names.map((n) => `w.${n}`), ...names, 'mean'],
            ...results.map((r) => [r === best ? `* ${r.label}` : `  ${r.label}`, ...names.map((n) => r.weights[n]!.toFixed(2)), ...names.map((n) => r.dev[n]!), r.mean]),
          ]));

          const testScore = async (w: MergeWeights, sets: LoadedEvalSet[]) => (await evaluateMerge(pool, w, sets)).mean;
          const baselines = baselineMerges(names);
          const testRows = [];
          for (const b of [...baselines, { label: 'best', weights: bestWeights }]) testRows.push({ label: b.label, mean: await testScore(b.weights, test) });
          say('\ntest NLL (held out):');
          say(table([['merge', 'mean'], ...testRows.map((r) => [r.label, r.mean])]));

          const ratios = mixtureRatios(bestWeights, names);
          say(`\nbest weights read as data-mixture ratios: ${names.map((n) => `${n} ${typeof ratios[n] === 'number' ? `${((ratios[n] as number) * 100).toFixed(1)}%` : 'removed'}`).join(', ')}`);

          const onnxPath = join(o.out, 'merged.onnx');
          const yamlPath = join(o.out, 'merged.mergekit.yaml');
          await exportOnnx(pool, bestWeights, onnxPath);
          await exportMergekit(pool, bestWeights, yamlPath);
          const session = await createFileSession(onnxPath, 'cpu');
          const reloaded = weightedMean(await evaluateSession(session, dev, manifest.model));
          await session.release();
          say(`exported ${onnxPath} (reloaded: dev mean ${fmt(reloaded)}) and ${yamlPath}`);
          say(`done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
          if (o.json) {
            printJson({
              pool: poolDir,
              best: { ...best, ratios, test: testRows.at(-1)!.mean },
              merges: results,
              test: testRows,
              exported: { onnx: onnxPath, mergekit: yamlPath, reloadedDevMean: reloaded },
            });
          }
        } finally {
          await pool.close();
        }
      }, o.json),
    );

  program
    .command('family')
    .description('generate the built-in model family: a base, CPT checkpoints per domain, dev and test sets')
    .requiredOption('--out <dir>', 'output directory')
    .option('--seed <n>', 'seed', '1')
    .option('--dtype <type>', 'weight storage: float32 or float16', 'float32')
    .option('--external-data', 'write weights as ONNX external data (<model>.onnx.data)')
    .option('--json', 'print the file list as JSON')
    .action((o) =>
      run(async () => {
        if (o.dtype !== 'float32' && o.dtype !== 'float16') throw new Error(`--dtype '${o.dtype}': expected float32 or float16`);
        const files = await buildFamily(o.out, { seed: parseNumberOption(o.seed, '--seed', { min: 0, integer: true }), dtype: o.dtype, externalData: Boolean(o.externalData) });
        if (o.json) printJson(files);
        else process.stdout.write(`wrote the model family to ${files.dir} (base.onnx, ${Object.keys(files.checkpoints).length} checkpoints, data/*.jsonl)\n`);
      }, o.json),
    );
}
