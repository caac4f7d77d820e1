import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * Structured logs on stderr (stdout is for results and --json). Fields: study, trial, worker.
 * Level from the caller, else $OPTIMER_LOG_LEVEL, else 'info'.
 */
export function createLogger(name: string, level?: string): Logger {
  return pino({ name, level: level ?? process.env.OPTIMER_LOG_LEVEL ?? 'info', base: { pid: process.pid } }, pino.destination(2));
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
