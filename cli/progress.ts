import cliProgress from 'cli-progress';
import { estimateEta, type Progress, type StudyEvent, type TransferSummary } from '../coordinator/index.js';
import { formatBytes } from '../shared/index.js';
import { fmt, formatDuration } from './output.js';

/** Seconds between plain progress lines when stderr is not a terminal. */
export const DEFAULT_PROGRESS_EVERY_S = 10;
/** How often the workers' transfers are looked at, ms (they say them with each heartbeat). */
const TRANSFERS_EVERY_MS = 1000;

export interface StudyProgressOptions {
  study: string;
  /** the study's trial budget: what the tests phase's counts are told apart from */
  budget: number;
  /** a bar on a terminal, plain lines otherwise, or nothing (--json) */
  mode: 'bar' | 'lines' | 'off';
  /** lines mode: at most one line this often while something changes, ms */
  everyMs?: number;
  stream?: NodeJS.WritableStream;
}

export interface StudyProgressDisplay {
  onEvent(e: StudyEvent, p: Progress): void;
  /** Shows what the workers are fetching (a pool's shards can take minutes before any trial starts). */
  followTransfers(source: () => TransferSummary | null): void;
  stop(): void;
}

/** `fetching 1.20 GiB of 4.00 GiB (30%), 85.0 MiB/s, 3 workers`, or '' when nothing is fetched. */
export function transfersText(t: TransferSummary | null): string {
  if (!t) return '';
  const pct = t.bytes > 0 ? ` (${Math.floor((100 * t.doneBytes) / t.bytes)}%)` : '';
  return `fetching ${formatBytes(t.doneBytes)} of ${formatBytes(t.bytes)}${pct}, ${formatBytes(t.bytesPerSecond)}/s, ${t.workers} worker${t.workers === 1 ? '' : 's'}`;
}

/** The mode for this process: a bar when stderr is a terminal, else plain lines; none for --json. */
export function progressMode(json: boolean): StudyProgressOptions['mode'] {
  if (json) return 'off';
  return process.stderr.isTTY ? 'bar' : 'lines';
}

/**
 * The progress of a running study, from its events: done/total of the current phase (the
 * phase is shown, so the total changes with it rather than jumping), best so far, ETA at the
 * recent pace, the workers the coordinator hears. One bar on a terminal; plain periodic lines
 * (done/total, best, ETA) when not, so a log file or CI shows the study moving.
 */
export function studyProgress(o: StudyProgressOptions): StudyProgressDisplay {
  if (o.mode === 'off') return { onEvent() {}, followTransfers() {}, stop() {} };
  const stream = o.stream ?? process.stderr;
  const workers = new Set<string>();
  let phase: Progress['phase'] = 'trials';
  let finishes: number[] = [];
  let last: Progress | undefined;
  let changed = false;
  let stopped = false;
  let fetching = '';
  let transfersTimer: NodeJS.Timeout | undefined;

  const view = () => {
    const p = last!;
    const tests = p.phase !== 'trials' && p.total > o.budget;
    const done = tests ? Math.max(0, p.finished - o.budget) : p.finished;
    const total = tests ? p.total - o.budget : p.total;
    const over = p.phase === 'complete' || p.phase === 'failed';
    const eta = over ? null : estimateEta(finishes, total - done, Date.now());
    return {
      phase: over ? p.phase : tests ? 'tests' : 'trials',
      done,
      total,
      running: p.running,
      best: p.best !== undefined ? fmt(p.best) : '-',
      eta: over ? '-' : eta ? formatDuration(eta.seconds) : '?',
      workers: workers.size,
      fetching: fetching ? ` | ${fetching}` : '',
    };
  };

  const line = (): string => {
    const v = view();
    return `optimer: study ${o.study}: ${v.phase} ${v.done}/${v.total}, ${v.running} running, best ${v.best}, ETA ${v.eta}, ${v.workers} workers${fetching ? `, ${fetching}` : ''}\n`;
  };

  let bar: cliProgress.SingleBar | undefined;
  let timer: NodeJS.Timeout | undefined;
  if (o.mode === 'lines') {
    timer = setInterval(
      () => {
        if (changed && last) {
          changed = false;
          stream.write(line());
        }
      },
      o.everyMs ?? DEFAULT_PROGRESS_EVERY_S * 1000,
    );
    timer.unref();
  }

  const draw = (): void => {
    const v = view();
    if (!bar) {
      bar = new cliProgress.SingleBar(
        {
          format: `study ${o.study} {phase} [{bar}] {value}/{total} | best {best} | ETA {etaText} | {workers} workers{fetching}`,
          stream: stream as NodeJS.WriteStream,
          hideCursor: true,
          clearOnComplete: true,
        },
        cliProgress.Presets.shades_classic,
      );
      bar.start(v.total, v.done, { phase: v.phase, best: v.best, etaText: v.eta, workers: v.workers, fetching: v.fetching });
      return;
    }
    bar.setTotal(v.total);
    bar.update(v.done, { phase: v.phase, best: v.best, etaText: v.eta, workers: v.workers, fetching: v.fetching });
  };

  return {
    onEvent(e, p) {
      if (stopped) return;
      if (e.type === 'worker.seen') workers.add(e.worker);
      if (e.type === 'worker.lost') workers.delete(e.worker);
      if (e.type === 'trial.completed' || e.type === 'trial.failed') finishes.push(Date.now());
      const phaseChanged = p.phase !== phase;
      if (phaseChanged) {
        phase = p.phase;
        finishes = []; // the tests' pace is not the trials'
      }
      last = p;
      changed = true;
      if (o.mode === 'bar') draw();
      else if (phaseChanged) {
        changed = false;
        stream.write(line());
      }
    },
    followTransfers(source) {
      if (stopped || transfersTimer) return;
      transfersTimer = setInterval(() => {
        const text = transfersText(source());
        if (text === fetching) return;
        fetching = text;
        changed = true;
        if (o.mode === 'bar' && last) draw();
      }, TRANSFERS_EVERY_MS);
      transfersTimer.unref();
    },
    stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      clearInterval(transfersTimer);
      bar?.stop();
    },
  };
}
