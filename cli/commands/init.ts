import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { basename, dirname, relative, resolve } from 'node:path';
import type { Command } from 'commander';
import {
  DEFAULT_ACK_WAIT_SECONDS,
  DEFAULT_BATCH_TOKENS,
  DEFAULT_MAX_ATTEMPTS,
  DEFAULT_CANARY_TRIALS,
  DEFAULT_FAILURE_STREAK,
  DEFAULT_METRIC,
  DEFAULT_TRIAL_TIMEOUT_SECONDS,
  EXECUTION_PROVIDERS,
  METRIC_NAMES,
  OptimerError,
  readManifest,
  studyNameSchema,
} from '../../shared/index.js';
import { collect, parseNamed, parseNumberOption, printJson } from '../output.js';

type Run = (fn: () => Promise<void>, json?: boolean) => Promise<void>;

/** Trials for K vectors: the K + 2 baselines, then about ten TPE trials per vector (at least 30). */
export function defaultTrials(k: number): number {
  return Math.max(30, Math.ceil((k + 2 + 10 * k) / 10) * 10);
}

const q = (s: string): string => JSON.stringify(s); // a JSON string is a YAML string

/** A commented study config (YAML) for the pool's vectors; paths relative to the file. */
export function studyConfigYaml(o: {
  name: string;
  pool: string;
  vectors: string[];
  sets: { name: string; path: string; test?: string }[];
  trials: number;
}): string {
  const placeholder = o.sets.length === 0;
  const sets = placeholder ? o.vectors.map((v) => ({ name: v, path: `data/${v}.dev.jsonl`, test: `data/${v}.test.jsonl` })) : o.sets;
  const lines = [
    `# Study config for optimer run (written by optimer init). Run it with:`,
    `#   optimer run THIS_FILE            (a private nats-server and 2 local workers)`,
    `#   optimer run THIS_FILE --workers 0 --nats URL   (workers join with: optimer worker --nats URL)`,
    `# Relative paths are relative to this file. Unknown keys are refused, so a typo is an error.`,
    '',
    `# the study's name: its record in the store, its NATS subjects (letters, digits, '-', '_')`,
    `name: ${q(o.name)}`,
    '',
    `# the pool of distribution vectors (optimer pool build)`,
    `pool: ${q(o.pool)}`,
    '',
    `# the vectors searched over (default: every vector of the pool)`,
    `vectors: [${o.vectors.map(q).join(', ')}]`,
    '',
    `# weight bounds, one [low, high] for all or per vector ({ ${o.vectors[0]}: [0, 1], ... });`,
    `# negative weights remove a vector's interference, above 1 extrapolate along it`,
    `bounds: [-1, 2]`,
    '',
    `objective:`,
    `  # minimize or maximize; default: the direction of the sets' metric`,
    `  # direction: minimize`,
    `  # the evaluation sets: JSONL of {"input_ids": [...]} (or text lines with a tokenizer); "test" is`,
    `  # held out: the best merge and the baselines are scored on it at the end`,
    ...(placeholder ? [`  # TODO: these paths are placeholders: point them at your evaluation sets`] : []),
    `  sets:`,
    ...sets.flatMap((s) => [
      `    - name: ${q(s.name)}`,
      `      path: ${q(s.path)}`,
      ...(s.test ? [`      test: ${q(s.test)}`] : []),
      `      metric: ${DEFAULT_METRIC}   # one of: ${METRIC_NAMES.join(', ')}`,
      `      weight: 1   # the set's weight in the objective (a weighted mean)`,
    ]),
    '',
    `# trials, baselines included (base, each vector alone, their average: ${o.vectors.length + (o.vectors.length > 1 ? 2 : 1)} trials)`,
    `trials: ${o.trials}`,
    '',
    `# the sampler: tpe (default), random or qmc; the seed makes the proposals reproducible`,
    `sampler:`,
    `  name: tpe`,
    `  seed: 0`,
    '',
    `# baselines measured first: true (all), false, or a list of base, single, average`,
    `baselines: true`,
    '',
    `execution:`,
    `  # the workers' execution provider (${EXECUTION_PROVIDERS.join(', ')}); default: each worker's own`,
    `  # provider: cuda`,
    `  # tokens per ONNX Runtime call (batch x padded length): bounds the logits' memory`,
    `  batchTokens: ${DEFAULT_BATCH_TOKENS}`,
    '',
    `lease:`,
    `  # a silent worker's proposal goes back to the queue after this long`,
    `  ackWaitSeconds: ${DEFAULT_ACK_WAIT_SECONDS}`,
    `  # a trial unanswered this long is issued again; after maxAttempts it is recorded failed`,
    `  trialTimeoutSeconds: ${DEFAULT_TRIAL_TIMEOUT_SECONDS}`,
    `  maxAttempts: ${DEFAULT_MAX_ATTEMPTS}`,
    '',
    `# a failure that would repeat stops the study as failed (rerun to resume) instead of spending it`,
    `failFast:`,
    `  # the first trials run alone until one completes; 0: no canary`,
    `  canary: ${DEFAULT_CANARY_TRIALS}`,
    `  # this many trials failing in a row with the same error stop the study; 0: never`,
    `  streak: ${DEFAULT_FAILURE_STREAK}`,
    '',
  ];
  return lines.join('\n');
}

export function registerInit(program: Command, run: Run): void {
  program
    .command('init')
    .description('write a commented study config (YAML, for optimer run) for a pool: its vectors and sensible defaults')
    .argument('<pool>', 'pool directory (optimer pool build)')
    .option('--out <file>', 'where to write the config (- for stdout)', 'study.yaml')
    .option('--name <name>', "the study's name (default: the pool directory's name)")
    .option('--set <NAME=PATH>', 'a dev evaluation set (repeat); none: placeholders to fill in', collect)
    .option('--test <NAME=PATH>', "a set's held-out test file (repeat)", collect)
    .option('--trials <n>', 'trial budget, baselines included (default: about ten per vector, at least 30)')
    .option('--force', 'overwrite an existing file')
    .option('--json', 'print what was written as JSON')
    .action((poolArg: string, o) =>
      run(async () => {
        const manifest = await readManifest(poolArg);
        const vectors = manifest.vectors.map((v) => v.name);
        const out = o.out === '-' ? undefined : resolve(o.out);
        const base = out ? dirname(out) : process.cwd();
        const rel = (p: string): string => {
          const r = relative(base, resolve(p));
          return r === '' ? '.' : r.startsWith('..') || r.startsWith('/') ? r : `./${r}`;
        };
        const name =
          o.name ??
          basename(resolve(poolArg))
            .replace(/[^A-Za-z0-9_-]/g, '-')
            .slice(0, 64);
        const checked = studyNameSchema.safeParse(name);
        if (!checked.success) throw new OptimerError('BAD_ARGUMENT', `--name '${name}': ${checked.error.issues[0]?.message}`);
        const tests = new Map(parseNamed(o.test, '--test').map(({ name: n, value }) => [n, value]));
        const sets = parseNamed(o.set, '--set').map(({ name: n, value }) => ({
          name: n,
          path: rel(value),
          ...(tests.has(n) ? { test: rel(tests.get(n)!) } : {}),
        }));
        for (const n of tests.keys())
          if (!sets.some((s) => s.name === n)) throw new OptimerError('BAD_ARGUMENT', `--test '${n}': no --set of that name`);
        const trials =
          o.trials !== undefined ? parseNumberOption(o.trials, '--trials', { min: 1, integer: true }) : defaultTrials(vectors.length);
        const yaml = studyConfigYaml({ name, pool: rel(poolArg), vectors, sets, trials });
        if (!out) {
          process.stdout.write(yaml);
          return;
        }
        if (existsSync(out) && !o.force)
          throw new OptimerError('BAD_ARGUMENT', `${out} exists; give --force to overwrite it, or --out another file`);
        await writeFile(out, yaml);
        if (o.json) printJson({ file: out, name, vectors, trials, placeholders: sets.length === 0 });
        else
          process.stdout.write(
            `wrote ${out}: study '${name}' over ${vectors.length} vectors (${vectors.join(', ')}), ${trials} trials` +
              (sets.length === 0 ? '; fill in the evaluation sets (placeholders)' : '') +
              `\nrun it with: optimer run ${relative(process.cwd(), out) || out}\n`,
          );
      }, o.json),
    );
}
