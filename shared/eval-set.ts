import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { OptimerError } from './errors.js';
import type { Metric, SequenceLimits } from './metrics/metric.js';
import { DEFAULT_METRIC, METRICS, type MetricItem, type MetricName } from './metrics/registry.js';
import type { TextTokenizer } from './tokenizer.js';

/** What reading a set takes from the pool: the model's limits, and its tokenizer for sets of text. */
export interface EvalSetContext extends SequenceLimits {
  /** loads the pool's tokenizer (called only when a set has text); absent or null: the pool has none */
  tokenizer?: (() => Promise<TextTokenizer | null>) | undefined;
}

/** How to build a pool whose sets may be text (the hint of the refusal). */
const TOKENIZER_HINT = "build the pool with 'optimer pool build --tokenizer path/to/tokenizer.json'";

/**
 * Reads a JSONL evaluation set of `metric` (default nll: one {"input_ids": [...]} or {"text": ...}
 * per line) and prepares its items (tokenising texts with the pool's tokenizer). Blank lines are
 * skipped; each other line must be JSON the metric accepts, else it is refused with the file and
 * line number. `label` names the set in errors about the whole set (default: the path).
 */
export async function readEvalSet(path: string, ctx: EvalSetContext): Promise<MetricItem<typeof DEFAULT_METRIC>[]>;
export async function readEvalSet<N extends MetricName>(
  path: string,
  ctx: EvalSetContext,
  metric: N,
  label?: string,
): Promise<MetricItem<N>[]>;
export async function readEvalSet(
  path: string,
  ctx: EvalSetContext,
  metric: MetricName = DEFAULT_METRIC,
  label = path,
): Promise<unknown[]> {
  // each metric's parseLine and prepare agree on its lines; here they are only passed along
  const m = METRICS[metric] as unknown as Metric<unknown, string, unknown>;
  const limits: SequenceLimits = { vocab: ctx.vocab, contextLength: ctx.contextLength };
  const items: unknown[] = [];
  const stream = createReadStream(path, { encoding: 'utf8' });
  const opened = new Promise<void>((resolve, reject) => {
    stream.once('open', () => resolve());
    stream.once('error', reject);
  });
  try {
    await opened;
  } catch (e) {
    throw new OptimerError('BAD_EVAL_SET', `${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, {
      cause: e,
    });
  }
  const lines = createInterface({ input: stream, crlfDelay: Infinity });
  let lineNo = 0;
  try {
    for await (const line of lines) {
      lineNo++;
      if (line.trim() === '') continue;
      const where = `${path}:${lineNo}`;
      let obj: unknown;
      try {
        obj = JSON.parse(line);
      } catch (e) {
        throw new OptimerError('BAD_EVAL_SET', `${where}: not valid JSON (${(e as Error).message})`);
      }
      items.push(m.parseLine(obj, where, limits));
    }
  } finally {
    lines.close();
    stream.destroy();
  }
  if (items.length === 0) throw new OptimerError('BAD_EVAL_SET', `${path}: no sequences`);
  let tokenizer: Promise<TextTokenizer> | undefined;
  return m.prepare(items, {
    where: label,
    limits,
    tokenizer: () => {
      tokenizer ??= (async () => {
        const t = (await ctx.tokenizer?.()) ?? null;
        if (!t) throw new OptimerError('BAD_EVAL_SET', `${label}: has lines of text, but the pool has no tokenizer: ${TOKENIZER_HINT}`);
        return t;
      })();
      return tokenizer;
    },
  });
}

export interface EvalSetSpec {
  name: string;
  path: string;
  /** weight of this set in the objective (default 1) */
  weight?: number;
  /** how its lines look and how it is scored (default nll) */
  metric?: MetricName;
}

/** A set read with its metric: `items` are what that metric's parseLine made of its lines. */
export type LoadedEvalSet<N extends MetricName = MetricName> = {
  [M in N]: { name: string; path: string; weight: number; metric: M; items: MetricItem<M>[] };
}[N];

/** Reads one set with its metric (the weight is taken as given). */
export async function loadEvalSet<N extends MetricName>(
  spec: { name: string; path: string; weight: number; metric: N },
  ctx: EvalSetContext,
): Promise<LoadedEvalSet<N>> {
  const items = await readEvalSet(spec.path, ctx, spec.metric, `evaluation set '${spec.name}' (${spec.path})`);
  return { name: spec.name, path: spec.path, weight: spec.weight, metric: spec.metric, items };
}

/** Reads and checks a list of sets: names unique, weights finite and ≥ 0, at least one above 0. */
export async function loadEvalSets(specs: EvalSetSpec[], ctx: EvalSetContext): Promise<LoadedEvalSet[]> {
  if (specs.length === 0) throw new OptimerError('BAD_ARGUMENT', 'give at least one evaluation set (--set NAME=PATH)');
  const names = new Set<string>();
  const out: LoadedEvalSet[] = [];
  for (const s of specs) {
    if (names.has(s.name)) throw new OptimerError('BAD_ARGUMENT', `evaluation set '${s.name}' is given twice`);
    names.add(s.name);
    const weight = s.weight ?? 1;
    if (!Number.isFinite(weight) || weight < 0)
      throw new OptimerError('BAD_ARGUMENT', `evaluation set '${s.name}': weight ${weight} must be a finite number ≥ 0`);
    out.push(await loadEvalSet({ name: s.name, path: s.path, weight, metric: s.metric ?? DEFAULT_METRIC }, ctx));
  }
  if (out.every((s) => s.weight === 0)) throw new OptimerError('BAD_ARGUMENT', 'at least one evaluation set needs a weight above 0');
  return out;
}
