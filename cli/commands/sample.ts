import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import { z } from 'zod';
import { createSampler, parseSpace, SAMPLER_NAMES, type TrialView } from '../../coordinator/index.js';
import { type Direction, OptimerError, Rng, seedFor } from '../../shared/index.js';
import { parseNumberOption } from '../output.js';

type Run = (fn: () => Promise<void>, json?: boolean) => Promise<void>;

const tellSchema = z.union([
  z.object({ trial: z.number().int().nonnegative(), value: z.number().finite() }).strict(),
  z.object({ trial: z.number().int().nonnegative(), state: z.enum(['running', 'failed']) }).strict(),
]);

/**
 * Ask/tell over JSON lines, as Optuna's ask() and tell(): a proposal at start, then one new
 * proposal for every valid line read. Proposed trials are running (the sampler's constant liar
 * sees them) until told a value or a failure.
 */
export async function askTell(opts: {
  spaceFile: string;
  sampler: (typeof SAMPLER_NAMES)[number];
  seed: number;
  trials?: number;
  input: NodeJS.ReadableStream;
  write: (line: string) => void;
  error: (line: string) => void;
}): Promise<void> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(opts.spaceFile, 'utf8'));
  } catch (e) {
    throw new OptimerError('BAD_ARGUMENT', `${opts.spaceFile}: cannot read a JSON search space (${(e as Error).message})`, { cause: e });
  }
  const direction = (json as { direction?: unknown })?.direction ?? 'minimize';
  if (direction !== 'minimize' && direction !== 'maximize')
    throw new OptimerError('BAD_ARGUMENT', `${opts.spaceFile}: direction: expected 'minimize' or 'maximize'`);
  const { direction: _d, ...rest } = json as Record<string, unknown>;
  const space = parseSpace(rest, opts.spaceFile);
  const sampler = createSampler({ name: opts.sampler, seed: opts.seed });
  const trials: TrialView[] = [];
  const limit = opts.trials ?? Infinity;

  const ask = (): boolean => {
    const number = trials.length;
    const params = sampler.propose(space, trials, direction as Direction, new Rng(seedFor(opts.seed, number)));
    trials.push({ number, state: 'running', params });
    opts.write(JSON.stringify({ trial: number, params }));
    return trials.length < limit;
  };
  if (limit <= 0 || !ask()) return;

  const lines = createInterface({ input: opts.input, crlfDelay: Infinity });
  let lineNo = 0;
  for await (const line of lines) {
    lineNo++;
    if (line.trim() === '') continue;
    const fail = (message: string): void => opts.error(JSON.stringify({ error: { code: 'BAD_ARGUMENT', line: lineNo, message } }));
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch (e) {
      fail(`not valid JSON (${(e as Error).message})`);
      continue;
    }
    const r = tellSchema.safeParse(parsed);
    if (!r.success) {
      fail('expected {"trial": n, "value": x} or {"trial": n, "state": "running" | "failed"}');
      continue;
    }
    const t = trials[r.data.trial];
    if (!t) {
      fail(`trial ${r.data.trial} has not been proposed`);
      continue;
    }
    if (t.state !== 'running') {
      fail(`trial ${r.data.trial} is already ${t.state}`);
      continue;
    }
    if ('value' in r.data) {
      t.state = 'complete';
      t.value = r.data.value;
    } else if (r.data.state === 'failed') t.state = 'failed';
    if (!ask()) break;
  }
  lines.close();
}

export function registerSample(program: Command, run: Run): void {
  program
    .command('sample')
    .description('ask/tell over JSON lines on stdin/stdout: a sampler outside any study')
    .requiredOption('--space <file>', 'search space JSON: {"direction": ..., "params": {"x": {"type": "float", "low": 0, "high": 1}, ...}}')
    .option('--sampler <name>', `sampler: ${SAMPLER_NAMES.join(', ')}`, 'tpe')
    .option('--seed <n>', 'seed', '0')
    .option('--trials <n>', 'stop after this many proposals')
    .action((o) =>
      run(async () => {
        if (!(SAMPLER_NAMES as readonly string[]).includes(o.sampler))
          throw new OptimerError('BAD_ARGUMENT', `--sampler '${o.sampler}': expected one of ${SAMPLER_NAMES.join(', ')}`);
        await askTell({
          spaceFile: o.space,
          sampler: o.sampler,
          seed: parseNumberOption(o.seed, '--seed', { min: 0, integer: true }),
          ...(o.trials !== undefined ? { trials: parseNumberOption(o.trials, '--trials', { min: 0, integer: true }) } : {}),
          input: process.stdin,
          write: (line) => process.stdout.write(`${line}\n`),
          error: (line) => process.stderr.write(`${line}\n`),
        });
        process.stdin.pause();
      }),
    );
}
