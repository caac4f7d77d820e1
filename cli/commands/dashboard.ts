import type { Command } from 'commander';
import { DashboardServer, DEFAULT_DASHBOARD_HOST, DEFAULT_DASHBOARD_PORT, type DashboardSource } from '../../coordinator/index.js';
import { createLogger, OptimerError } from '../../shared/index.js';
import { readList, readStatus, type StatusOptions } from '../status-source.js';
import { DEFAULT_STORE } from './study.js';

type Run = (fn: () => Promise<void>, json?: boolean) => Promise<void>;

/** The env var holding the dashboard's viewer token (an env var, not a flag: flags show in `ps`). */
export const DASHBOARD_TOKEN_ENV = 'OPTIMER_DASHBOARD_TOKEN';

export interface DashboardAddress {
  host: string;
  port: number;
  token?: string;
}

/**
 * `PORT`, `HOST:PORT` or `[IPv6]:PORT` (true: the default, loopback), with the token from
 * $OPTIMER_DASHBOARD_TOKEN when set.
 */
export function parseDashboardAddress(value: string | true, flag: string): DashboardAddress {
  const token = process.env[DASHBOARD_TOKEN_ENV] || undefined;
  const withToken = (a: { host: string; port: number }): DashboardAddress => (token ? { ...a, token } : a);
  if (value === true) return withToken({ host: DEFAULT_DASHBOARD_HOST, port: DEFAULT_DASHBOARD_PORT });
  const v = value.trim();
  const m = /^\d{1,5}$/.test(v)
    ? [v, undefined, v]
    : (/^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$/.exec(v) ?? /^([A-Za-z0-9.-]+):(\d{1,5})$/.exec(v));
  const port = m ? Number(m[2]) : NaN;
  if (!m || !Number.isInteger(port) || port > 65535)
    throw new OptimerError(
      'BAD_ARGUMENT',
      `${flag} '${value}': expected PORT, HOST:PORT or [IPv6]:PORT (for example 8710 or 0.0.0.0:8710)`,
    );
  return withToken({ host: m[1] ?? DEFAULT_DASHBOARD_HOST, port });
}

/** Says where the dashboard is, and warns when it is reachable beyond this machine without a token. */
export function announceDashboard(d: DashboardServer, a: DashboardAddress): void {
  process.stderr.write(`optimer: dashboard at ${d.url}\n`);
  const loopback = a.host === '127.0.0.1' || a.host === '::1' || a.host === 'localhost';
  if (!loopback && !a.token)
    process.stderr.write(`optimer: the dashboard listens on ${a.host} without a token; set ${DASHBOARD_TOKEN_ENV} to require one\n`);
}

/** A store (read as recorded) or NATS (the running coordinators answer), polled for changes. */
function statusSource(o: StatusOptions): DashboardSource {
  return {
    list: async () => (await readList(o)).studies,
    status: async (study) => (await readStatus(o, study)).status,
  };
}

export function registerDashboard(program: Command, run: Run): void {
  program
    .command('dashboard')
    .description(
      'serve the web dashboard for the studies of a store, or of the coordinators on a NATS (`optimer run --dashboard` serves its own)',
    )
    .option('--store <dir>', 'the study store to show', DEFAULT_STORE)
    .option('--nats <url>', 'show the studies the coordinators on this NATS run (they answer over NATS)')
    .option(
      '--listen <address>',
      `PORT or HOST:PORT to listen on (token: $${DASHBOARD_TOKEN_ENV})`,
      `${DEFAULT_DASHBOARD_HOST}:${DEFAULT_DASHBOARD_PORT}`,
    )
    .option('--log-level <level>', 'log level', 'warn')
    .action((o) =>
      run(async () => {
        const address = parseDashboardAddress(o.listen, '--listen');
        const source = statusSource({ store: o.store, ...(o.nats ? { nats: o.nats } : {}) });
        await source.list(); // a wrong --store or --nats is an error now, not an empty page
        const d = await DashboardServer.start({ source, ...address, log: createLogger('dashboard', o.logLevel) });
        announceDashboard(d, address);
        await new Promise<void>((resolve) => {
          process.once('SIGINT', resolve);
          process.once('SIGTERM', resolve);
        });
        await d.close();
      }),
    );
}
