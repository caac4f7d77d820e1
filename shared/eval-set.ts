import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { OptimerError } from './errors.js';
import type { SequenceLimits } from './metrics/metric.js';
import { DEFAULT_METRIC, METRICS, type MetricItem, type MetricName } from './metrics/registry.js';

/**
 * Reads a JSONL evaluation set of `metric` (default nll: one {"input_ids": [...]} per line).
 * Blank lines are skipped; each other line must be JSON the metric accepts, else it is refused
 * with the file and line number.
 */
export async function readEvalSet(path: string, limits: SequenceLimits): Promise<MetricItem<typeof DEFAULT_METRIC>[]>;
export async function readEvalSet<N extends MetricName>(path: string, limits: SequenceLimits, metric: N): Promise<MetricItem<N>[]>;
export async function readEvalSet(path: string, limits: SequenceLimits, metric: MetricName = DEFAULT_METRIC): Promise<unknown[]> {
  const m = METRICS[metric];
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
  return items;
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
  limits: SequenceLimits,
): Promise<LoadedEvalSet<N>> {
  const items = await readEvalSet(spec.path, limits, spec.metric);
  return { name: spec.name, path: spec.path, weight: spec.weight, metric: spec.metric, items };
}

/** Reads and checks a list of sets: names unique, weights finite and ≥ 0, at least one above 0. */
export async function loadEvalSets(specs: EvalSetSpec[], limits: SequenceLimits): Promise<LoadedEvalSet[]> {
  if (specs.length === 0) throw new OptimerError('BAD_ARGUMENT', 'give at least one evaluation set (--set NAME=PATH)');
  const names = new Set<string>();
  const out: LoadedEvalSet[] = [];
  for (const s of specs) {
    if (names.has(s.name)) throw new OptimerError('BAD_ARGUMENT', `evaluation set '${s.name}' is given twice`);
    names.add(s.name);
    const weight = s.weight ?? 1;
    if (!Number.isFinite(weight) || weight < 0)
      throw new OptimerError('BAD_ARGUMENT', `evaluation set '${s.name}': weight ${weight} must be a finite number ≥ 0`);
    out.push(await loadEvalSet({ name: s.name, path: s.path, weight, metric: s.metric ?? DEFAULT_METRIC }, limits));
  }
  if (out.every((s) => s.weight === 0)) throw new OptimerError('BAD_ARGUMENT', 'at least one evaluation set needs a weight above 0');
  return out;
}
