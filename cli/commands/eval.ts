import type { Command } from 'commander';
import {
  DEFAULT_BATCH_TOKENS,
  DEFAULT_METRIC,
  type EvalSetSpec,
  EXECUTION_PROVIDERS,
  loadEvalSets,
  METRIC_NAMES,
  METRICS,
  type MergeWeights,
  type MetricName,
  metricNamed,
  OptimerError,
  parseWeights,
  Pool,
  uniformWeighting,
} from '../../shared/index.js';
import { workerSide } from '../worker-side.js';
import {
  collect,
  fmt,
  parseNamed,
  parseNumberOption,
  parseProvider,
  parseWeightFeed,
  printJson,
  table,
  WEIGHTS_AS_HELP,
} from '../output.js';
import { readStatus } from '../status-source.js';
import { DEFAULT_STORE } from './study.js';

type Run = (fn: () => Promise<void>, json?: boolean) => Promise<void>;

/** `--set NAME=PATH` (repeat) with optional `--set-weight NAME=W`, every set scored by `metric`. */
export function parseSetSpecs(
  sets: string[] | undefined,
  setWeights: string[] | undefined,
  metric: MetricName = DEFAULT_METRIC,
): EvalSetSpec[] {
  const specs = parseNamed(sets, '--set').map(({ name, value }) => ({ name, path: value, weight: 1, metric }));
  for (const { name, value } of parseNamed(setWeights, '--set-weight')) {
    const s = specs.find((x) => x.name === name);
    if (!s) throw new OptimerError('BAD_ARGUMENT', `--set-weight '${name}': no --set of that name`);
    s.weight = parseNumberOption(value, `--set-weight ${name}`, { min: 0 });
  }
  return specs;
}

/**
 * Opens the pool, re-hashes its shards when `verify` (a flipped byte would change the merge
 * silently: a corrupt or missing shard is a BAD_POOL error naming it), parses the weights.
 */
async function withPoolWeights<T>(dir: string, spec: string, verify: boolean, fn: (pool: Pool, w: MergeWeights) => Promise<T>): Promise<T> {
  const pool = await Pool.open(dir);
  try {
    if (verify) await pool.verify();
    return await fn(
      pool,
      parseWeights(
        spec,
        pool.manifest.vectors.map((v) => v.name),
      ),
    );
  } finally {
    await pool.close();
  }
}

/** What the lines of a set look like, per metric (the metric's name only once there are several). */
const setLineHelp = METRIC_NAMES.map((n) => (METRIC_NAMES.length > 1 ? `${METRICS[n].lineFormat} (${n})` : METRICS[n].lineFormat)).join(
  ' or ',
);

export function registerEval(program: Command, run: Run): void {
  program
    .command('eval')
    .description('evaluate one merge θ_base + Σ w_i·v_i of a pool on evaluation sets')
    .requiredOption('--pool <dir>', 'pool directory')
    .option('--weights <spec>', 'merge weights, e.g. ja=0.5,zh=0.2 (vectors not named weigh 0)', '')
    .option('--set <NAME=PATH>', `an evaluation set, JSONL of ${setLineHelp} (repeat)`, collect)
    .option('--set-weight <NAME=W>', "a set's weight in the mean (default 1; repeat)", collect)
    .option(
      '--metric <name>',
      `how every set is scored: ${METRIC_NAMES.map((n) => `${n} (${METRICS[n].description})`).join(', ')}`,
      DEFAULT_METRIC,
    )
    .option('--provider <name>', `execution provider: ${EXECUTION_PROVIDERS.join(', ')}`, 'cpu')
    .option('--batch-tokens <n>', 'tokens per ONNX Runtime call (batch × padded length)', String(DEFAULT_BATCH_TOKENS))
    .option('--threads <n>', "threads of the merge and of ONNX Runtime's intra-op pool (default: one merge thread, ONNX Runtime's own)")
    .option('--weights-as <how>', WEIGHTS_AS_HELP)
    .option('--no-verify', "skip re-hashing the pool's shards before the merge (sha256 of every shard, on by default)")
    .option('--json', 'print as JSON')
    .action((o) =>
      run(async () => {
        const provider = parseProvider(o.provider);
        const metric = metricNamed(o.metric, '--metric').name;
        const batchTokens = parseNumberOption(o.batchTokens, '--batch-tokens', { min: 1, integer: true });
        const threads = o.threads === undefined ? undefined : parseNumberOption(o.threads, '--threads', { min: 1, integer: true });
        const weightFeed = o.weightsAs === undefined ? undefined : parseWeightFeed(o.weightsAs);
        const specs = parseSetSpecs(o.set, o.setWeight, metric);
        const report = await withPoolWeights(o.pool, o.weights, o.verify !== false, async (pool, weights) => {
          const sets = await loadEvalSets(specs, pool.evalSetContext());
          const { evaluateMerge } = await workerSide();
          const r = await evaluateMerge(pool, uniformWeighting(weights), sets, {
            provider,
            batchTokens,
            ...(threads ? { threads } : {}),
            ...(weightFeed ? { weightFeed } : {}),
          });
          return { weights: Object.fromEntries(pool.manifest.vectors.map((v) => [v.name, weights.get(v.name) ?? 0])), ...r };
        });
        // a NaN or infinite score is no score: the report still prints, the exit code says so
        const notFinite = report.scores.filter((s) => !Number.isFinite(s.score));
        const failure =
          notFinite.length > 0
            ? new OptimerError(
                'RUNTIME',
                `the ${metric} is not finite for ${notFinite.map((s) => `set '${s.name}' (${s.score})`).join(', ')}: ` +
                  'the merged model overflows or is broken (try smaller weights)',
              )
            : undefined;
        if (o.json) {
          printJson({ metric, ...report });
          if (failure) throw failure;
          return;
        }
        const rows: (string | number)[][] = [
          ['set', metric, 'weight', 'tokens'],
          ...report.scores.map((s) => [s.name, s.score, s.weight, s.tokens]),
        ];
        process.stdout.write(
          `weights (--weights): ${Object.entries(report.weights)
            .map(([k, v]) => `${k}=${v}`)
            .join(',')}\n${table(rows)}\nweighted mean ${metric} ${fmt(report.mean)}\n` +
            `merged weights fed to ONNX Runtime as ${report.weightFeed}${report.weightFeedNote ? ` (${report.weightFeedNote})` : ''}\n`,
        );
        if (failure) throw failure;
      }, o.json),
    );

  program
    .command('export')
    .description("write a merge as an ONNX model, or as a mergekit config: given weights, or a study's best or one of its trials")
    .option('--pool <dir>', "pool directory (default with --study: the study's pool)")
    .option('--weights <spec>', 'merge weights, e.g. ja=0.5,zh=0.2')
    .option('--study <name>', 'take the weights from this study (with --best or --trial N)')
    .option('--best', "--study: the study's best trial so far")
    .option('--trial <n>', '--study: this trial')
    .option('--store <dir>', "--study: the study's store (locked by a running coordinator: asked over NATS)", DEFAULT_STORE)
    .option('--nats <url>', "--study: ask the study's running coordinator over this NATS")
    .requiredOption('--out <path>', 'output file (.onnx, or .yaml with --format mergekit)')
    .option('--format <fmt>', 'onnx or mergekit', 'onnx')
    .option('--external-data', 'onnx: write weights to <out>.data (default past 1 GiB)')
    .option('--no-verify', "onnx: skip re-hashing the pool's shards before the merge (on by default)")
    .option('--hf <NAME=REPO>', "mergekit: Hugging Face repo or path of a vector's checkpoint (repeat)", collect)
    .option('--base-model <repo>', 'mergekit: Hugging Face repo or path of the base model')
    .option('--json', 'print the written files as JSON')
    .action((o) =>
      run(async () => {
        if (o.format !== 'onnx' && o.format !== 'mergekit')
          throw new OptimerError('BAD_ARGUMENT', `--format '${o.format}': expected onnx or mergekit`);
        const { pool: poolDir, weights: spec, from } = await exportSource(o);
        const { exportMergekit, exportOnnx } = await workerSide();
        // a mergekit config reads no shard: only an ONNX export needs them verified
        const files = await withPoolWeights(poolDir, spec, o.format === 'onnx' && o.verify !== false, (pool, weights) => {
          if (o.format === 'onnx') return exportOnnx(pool, uniformWeighting(weights), o.out, o.externalData ? { externalData: true } : {});
          const models = new Map(parseNamed(o.hf, '--hf').map(({ name, value }) => [name, value]));
          for (const name of models.keys()) pool.vector(name);
          return exportMergekit(pool, uniformWeighting(weights), o.out, { models, ...(o.baseModel ? { baseModel: o.baseModel } : {}) });
        });
        if (o.json) printJson({ format: o.format, files, ...(from ? { weights: spec, ...from } : {}) });
        else
          process.stdout.write(
            `wrote ${files.join(', ')}${from ? ` (study ${from.study}, trial ${from.trial}: --weights ${spec})` : ''}\n`,
          );
      }, o.json),
    );
}

/** The pool and weights of an export: given, or a study's best or numbered trial, read from its record. */
async function exportSource(o: {
  pool?: string;
  weights?: string;
  study?: string;
  best?: boolean;
  trial?: string;
  store: string;
  nats?: string;
}): Promise<{ pool: string; weights: string; from?: { study: string; trial: number; label: string; objective: number | null } }> {
  if (!o.study) {
    if (o.best || o.trial !== undefined) throw new OptimerError('BAD_ARGUMENT', '--best and --trial take the weights of a --study NAME');
    if (!o.pool || o.weights === undefined)
      throw new OptimerError('BAD_ARGUMENT', 'give --pool and --weights, or --study NAME with --best or --trial N');
    return { pool: o.pool, weights: o.weights };
  }
  if (o.weights !== undefined) throw new OptimerError('BAD_ARGUMENT', '--weights and --study: give one of them');
  if (Boolean(o.best) === (o.trial !== undefined))
    throw new OptimerError('BAD_ARGUMENT', '--study: give --best or --trial N (one of them)');
  const n = o.trial !== undefined ? parseNumberOption(o.trial, '--trial', { min: 0, integer: true }) : undefined;
  const { status } = await readStatus({ store: o.store, ...(o.nats ? { nats: o.nats } : {}) }, o.study, {
    offset: n ?? 0,
    limit: n === undefined ? 0 : 1,
  });
  const s = status.summary;
  const pool = o.pool ?? s.pool;
  if (n === undefined) {
    if (!s.best) throw new OptimerError('NOT_FOUND', `study '${o.study}' has no complete trial yet`);
    return {
      pool,
      weights: s.best.weightsArg,
      from: { study: s.study, trial: s.best.trial ?? -1, label: s.best.label, objective: s.best.objective },
    };
  }
  const t = status.trials.items.find((x) => x.number === n);
  if (!t) throw new OptimerError('NOT_FOUND', `study '${o.study}' has no trial ${n} (it has ${status.trials.total})`);
  return { pool, weights: t.weightsArg, from: { study: s.study, trial: t.number, label: t.label, objective: t.objective } };
}
