import { pino, type Logger } from 'pino';
import pinoPretty from 'pino-pretty';
import { OptimerError } from './errors.js';

export type { Logger };

export const LOG_FORMATS = ['pretty', 'json'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/** `--log-format`, else $OPTIMER_LOG_FORMAT, else pretty on a terminal and JSON lines elsewhere (for log collectors). */
export function resolveLogFormat(given?: string): LogFormat {
  const f = given ?? process.env.OPTIMER_LOG_FORMAT ?? (process.stderr.isTTY ? 'pretty' : 'json');
  if (!(LOG_FORMATS as readonly string[]).includes(f))
    throw new OptimerError('BAD_ARGUMENT', `log format '${f}': expected one of ${LOG_FORMATS.join(', ')}`);
  return f as LogFormat;
}

/**
 * Structured logs on stderr (stdout is for results and --json). Fields: study, trial, worker.
 * Level from the caller, else $OPTIMER_LOG_LEVEL, else 'info'. Pretty lines are formatted in
 * this thread, synchronously (no transport worker): a log line is never lost on exit.
 */
export function createLogger(name: string, level?: string, format?: string): Logger {
  const options = { name, level: level ?? process.env.OPTIMER_LOG_LEVEL ?? 'info', base: { pid: process.pid } };
  if (resolveLogFormat(format) === 'json') return pino(options, pino.destination(2));
  const pretty = pinoPretty({
    destination: 2,
    sync: true,
    colorize: Boolean(process.stderr.isTTY),
    translateTime: 'SYS:HH:MM:ss',
    ignore: 'pid,hostname',
  });
  return pino(options, pretty);
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
