import { existsSync } from 'node:fs';
import { readFile, mkdir, writeFile } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { stringify } from 'yaml';
import type { Command } from 'commander';
import { loadStudyConfig } from '../../coordinator/index.js';
import {
  buildFamily,
  buildPool,
  createLogger,
  DEFAULT_METRIC,
  FAMILY_DOMAINS,
  type FamilyFiles,
  loadEvalSets,
  perVectorGenome,
  Pool,
  weightedMean,
} from '../../shared/index.js';
import { fmt, parseNumberOption, printJson } from '../output.js';
import { progressMode, studyProgress } from '../progress.js';
import { workerSide } from '../worker-side.js';
import { renderSummary, summarize } from './pool.js';
import { parseDashboardAddress } from './dashboard.js';
import { runStudy } from './run.js';
import { renderReport } from './study.js';

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
    .description(
      'the whole job on the built-in model family: build it and a pool, run a TPE study on 2 local workers, export the best merge',
    )
    .option('--out <dir>', 'working directory (family, pool, study store, exports)', '.optimer/demo')
    .option('--seed <n>', 'seed of the model family and of the sampler', '1')
    .option('--trials <n>', 'trial budget, baselines included', '60')
    .option('--workers <n>', 'local worker processes', '2')
    .option('--dashboard [address]', 'serve the web dashboard while the study runs (PORT or HOST:PORT; default 127.0.0.1:8710)')
    .option('--json', 'print the report as JSON')
    .action((o) =>
      run(async () => {
        const dashboard = o.dashboard === undefined ? undefined : parseDashboardAddress(o.dashboard, '--dashboard');
        const seed = parseNumberOption(o.seed, '--seed', { min: 0, integer: true });
        const trials = parseNumberOption(o.trials, '--trials', { min: 1, integer: true });
        const workers = parseNumberOption(o.workers, '--workers', { min: 1, integer: true });
        const say = (s: string): void => {
          if (!o.json) process.stdout.write(`${s}\n`);
        };
        const out = resolve(o.out);
        await mkdir(out, { recursive: true });
        const t0 = performance.now();
        say(`building the model family (seed ${seed}) in ${join(out, 'family')} ...`);
        const family = await ensureFamily(join(out, 'family'), seed);
        const poolDir = join(out, 'pool');
        const manifest = await buildPool({
          base: family.base,
          vectors: FAMILY_DOMAINS.map((name) => ({ name, path: family.checkpoints[name]! })),
          out: poolDir,
        });
        say(`${renderSummary(summarize(manifest, poolDir))}\n`);

        // the study a user would write by hand (kept in the working directory to read or edit)
        const configPath = join(out, 'study.yaml');
        const config = {
          name: 'demo',
          pool: './pool',
          bounds: [-0.5, 1],
          objective: {
            direction: 'minimize',
            sets: FAMILY_DOMAINS.map((n) => ({
              name: n,
              path: relative(out, family.dev[n]!),
              test: relative(out, family.test[n]!),
              metric: DEFAULT_METRIC,
              weight: 1,
            })),
          },
          trials,
          sampler: { name: 'tpe', seed },
        };
        await writeFile(configPath, stringify(config));
        say(`running study ${configPath}: ${trials} trials on ${workers} local workers (a private nats-server, coordinator, workers) ...`);
        const bar = studyProgress({ study: 'demo', budget: trials, mode: progressMode(Boolean(o.json)) });
        const { report, interrupted } = await runStudy({
          config: await loadStudyConfig(configPath),
          storeDir: join(out, 'store'),
          workers,
          fresh: true,
          log: createLogger('coordinator', 'warn'),
          onEvent: (e, p) => bar.onEvent(e, p),
          followTransfers: (source) => bar.followTransfers(source),
          ...(dashboard ? { dashboard } : {}),
        });
        bar.stop();
        if (interrupted || !report.best) throw new Error('the demo study did not complete');
        say(renderReport(report));

        const best = report.best.weights;
        const bestWeighting = perVectorGenome(Object.keys(best)).weighting(best);
        const onnxPath = join(out, 'merged.onnx');
        const yamlPath = join(out, 'merged.mergekit.yaml');
        const { createFileSession, evaluateSession, exportMergekit, exportOnnx } = await workerSide();
        const pool = await Pool.open(poolDir);
        let reloaded: number;
        try {
          await pool.verify(); // what the study's workers verified, the export checks again
          await exportOnnx(pool, bestWeighting, onnxPath);
          await exportMergekit(pool, bestWeighting, yamlPath);
          const dev = await loadEvalSets(
            FAMILY_DOMAINS.map((n) => ({ name: n, path: family.dev[n]! })),
            manifest.model,
          );
          const session = await createFileSession(onnxPath, 'cpu', manifest.model.output);
          reloaded = weightedMean(await evaluateSession(session, dev, manifest.model));
          await session.release();
        } finally {
          await pool.close();
        }
        say(`\nexported ${onnxPath} (reloaded: dev objective ${fmt(reloaded)}) and ${yamlPath}`);
        say(
          `done in ${((performance.now() - t0) / 1000).toFixed(1)} s; read the record again with: optimer study best demo --store ${join(out, 'store')}`,
        );
        if (o.json) printJson({ ...report, exported: { onnx: onnxPath, mergekit: yamlPath, reloadedDevObjective: reloaded } });
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
        const files = await buildFamily(o.out, {
          seed: parseNumberOption(o.seed, '--seed', { min: 0, integer: true }),
          dtype: o.dtype,
          externalData: Boolean(o.externalData),
        });
        if (o.json) printJson(files);
        else
          process.stdout.write(
            `wrote the model family to ${files.dir} (base.onnx, ${Object.keys(files.checkpoints).length} checkpoints, data/*.jsonl)\n`,
          );
      }, o.json),
    );
}
