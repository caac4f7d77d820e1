import cliProgress from 'cli-progress';
import {
  EXECUTION_PROVIDERS,
  type ExecutionProvider,
  isOptimerError,
  OptimerError,
  WEIGHT_FEEDS,
  type WeightFeed,
} from '../shared/index.js';

/** Repeatable option collector for commander (`--vector a=x --vector b=y`). */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** Splits repeated `NAME=VALUE` options, refusing malformed or repeated names. */
export function parseNamed(list: string[] | undefined, flag: string): { name: string; value: string }[] {
  const out: { name: string; value: string }[] = [];
  for (const item of list ?? []) {
    const eq = item.indexOf('=');
    if (eq <= 0 || eq === item.length - 1) throw new OptimerError('BAD_ARGUMENT', `${flag} '${item}': expected NAME=VALUE`);
    const name = item.slice(0, eq);
    if (out.some((o) => o.name === name)) throw new OptimerError('BAD_ARGUMENT', `${flag}: '${name}' is given twice`);
    out.push({ name, value: item.slice(eq + 1) });
  }
  return out;
}

export function parseNumberOption(value: string, flag: string, { min = -Infinity, integer = false } = {}): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < min || (integer && !Number.isInteger(n))) {
    throw new OptimerError(
      'BAD_ARGUMENT',
      `${flag} '${value}': expected ${integer ? 'an integer' : 'a number'}${min > -Infinity ? ` ≥ ${min}` : ''}`,
    );
  }
  return n;
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** A plain text table: first row is the header; numbers right-aligned. */
export function table(rows: (string | number)[][]): string {
  const cells = rows.map((r) => r.map((c) => (typeof c === 'number' ? fmt(c) : c)));
  const widths = cells[0]!.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const numeric = rows[1]?.map((c) => typeof c === 'number') ?? [];
  return cells
    .map((r, ri) =>
      r
        .map((c, i) => (numeric[i] && ri > 0 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export function fmt(x: number, digits = 4): string {
  if (Number.isInteger(x)) return String(x);
  return x.toFixed(digits);
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let u = 0;
  let v = n;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}

/** A progress bar on stderr when it is a terminal (and not in --json mode); silent otherwise. */
export function progress(label: string, enabled = true): { update(done: number, total: number, stage?: string): void; stop(): void } {
  if (!enabled || !process.stderr.isTTY) return { update() {}, stop() {} };
  let bar: cliProgress.SingleBar | undefined;
  return {
    update(done, total, stage = '') {
      if (!bar) {
        bar = new cliProgress.SingleBar(
          { format: `${label} [{bar}] {value}/{total} {stage}`, stream: process.stderr, hideCursor: true, clearOnComplete: true },
          cliProgress.Presets.shades_classic,
        );
        bar.start(total, 0, { stage });
      }
      bar.setTotal(total);
      bar.update(done, { stage });
    },
    stop: () => bar?.stop(),
  };
}

/** Prints an error the way scripts and people both can read, and sets the exit code. */
export function reportError(e: unknown, json: boolean): void {
  const err = isOptimerError(e) ? e : new OptimerError('RUNTIME', (e as Error)?.message ?? String(e), { cause: e });
  if (json) process.stderr.write(`${JSON.stringify({ error: err.toJSON() })}\n`);
  else process.stderr.write(`optimer: ${err.message}\n`);
  if (!isOptimerError(e) && process.env.OPTIMER_DEBUG) process.stderr.write(`${(e as Error)?.stack}\n`);
  process.exitCode = err.code === 'RUNTIME' || err.code === 'STUDY_FAILED' ? 1 : 2;
}

export function parseProvider(value: string): ExecutionProvider {
  if (!(EXECUTION_PROVIDERS as readonly string[]).includes(value)) {
    throw new OptimerError('BAD_ARGUMENT', `--provider '${value}': expected one of ${EXECUTION_PROVIDERS.join(', ')}`);
  }
  return value as ExecutionProvider;
}

export function parseWeightFeed(value: string): WeightFeed {
  if (!(WEIGHT_FEEDS as readonly string[]).includes(value)) {
    throw new OptimerError('BAD_ARGUMENT', `--weights-as '${value}': expected one of ${WEIGHT_FEEDS.join(', ')}`);
  }
  return value as WeightFeed;
}

/** The --weights-as option's help, one text for every command that takes it. */
export const WEIGHTS_AS_HELP =
  'on the cpu provider, how merged weights reach ONNX Runtime: inputs (one session per pool, weights fed as float32 inputs; default) ' +
  'or initializers (a session per trial, as on a GPU)';

/** A duration for people: 45s, 3m 20s, 2h 05m. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}
