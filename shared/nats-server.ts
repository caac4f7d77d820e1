import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { delimiter, join } from 'node:path';
import { OptimerError } from './errors.js';

export const NATS_INSTALL_HINT =
  "install it with 'sudo apt-get install nats-server' (Debian/Ubuntu: /usr/sbin/nats-server), " +
  'or put a nats-server 2.9+ binary on PATH, or set OPTIMER_NATS_SERVER=/path/to/nats-server';

/** The nats-server binary: $OPTIMER_NATS_SERVER, then PATH, then /usr/sbin (not on a user's PATH). */
export function findNatsServer(env: NodeJS.ProcessEnv = process.env, systemDirs = ['/usr/sbin', '/usr/local/sbin']): string {
  const explicit = env.OPTIMER_NATS_SERVER;
  if (explicit) {
    if (isExecutable(explicit)) return explicit;
    throw new OptimerError('SETUP', `OPTIMER_NATS_SERVER=${explicit} is not an executable file; ${NATS_INSTALL_HINT}`);
  }
  const dirs = [...(env.PATH ?? '').split(delimiter).filter(Boolean), ...systemDirs];
  for (const d of dirs) {
    const p = join(d, 'nats-server');
    if (isExecutable(p)) return p;
  }
  throw new OptimerError('SETUP', `nats-server is not installed: ${NATS_INSTALL_HINT}`);
}

function isExecutable(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

export interface NatsServerHandle {
  url: string;
  port: number;
  process: ChildProcess;
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;
function killOnExit(child: ChildProcess): void {
  running.add(child);
  child.once('exit', () => running.delete(child));
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // a crashed parent must not leave servers behind
  process.once('exit', () => {
    for (const c of running) killGroup(c, 'SIGKILL');
  });
}

/**
 * nats-server runs under a small /bin/sh watchdog, in a process group of its own: the shell starts
 * the server, then checks once a second that the process that started it is alive, and stops the
 * server (SIGTERM, a clean shutdown) as soon as it is not: a launcher killed with SIGKILL leaves
 * no server behind. A SIGTERM (or SIGINT, SIGHUP) to the shell stops the server at once and the
 * shell exits with it; a server that exits on its own ends the shell too. The server inherits
 * the shell's stderr, where its readiness line is read.
 */
const WATCHDOG = [
  'parent=$1; shift',
  '"$@" & child=$!',
  "trap 'kill -TERM $child 2>/dev/null; wait $child; exit $?' TERM INT HUP",
  'while kill -0 "$parent" 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 1 & wait $!; done',
  'kill -TERM $child 2>/dev/null',
  'wait $child',
].join('\n');

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    if (child.pid !== undefined) process.kill(-child.pid, signal);
  } catch {
    // gone already
  }
}

/** SIGTERM to the watchdog (it stops the server and waits for it), SIGKILL to the group after `graceMs`. */
async function stopWatched(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => killGroup(child, 'SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
  killGroup(child, 'SIGKILL'); // nothing of the group may outlive the watchdog
}

/**
 * Starts a private nats-server with JetStream on a free loopback port, its store in `storeDir`.
 * Resolves once the server says it is ready; `stop()` ends it (SIGTERM, then SIGKILL).
 */
export async function startNatsServer(options: {
  storeDir: string;
  host?: string;
  /** a fixed port (a restart on the same address, for reconnect tests); default: a free one */
  port?: number;
  binary?: string;
  /** a config file (users, accounts, TLS); -a/-p/-sd here override its listen and store */
  config?: string;
  readyTimeoutMs?: number;
}): Promise<NatsServerHandle> {
  const binary = options.binary ?? findNatsServer();
  const host = options.host ?? '127.0.0.1';
  mkdirSync(options.storeDir, { recursive: true });
  let lastError: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = options.port ?? (await freePort(host));
    const args = [...(options.config ? ['-c', options.config] : []), '-a', host, '-p', String(port), '-js', '-sd', options.storeDir];
    const child = spawn('/bin/sh', ['-c', WATCHDOG, 'optimer-nats-server', String(process.pid), binary, ...args], {
      stdio: ['ignore', 'ignore', 'pipe'],
      detached: true, // its own process group: a stop reaches the server even if the shell is gone
    });
    killOnExit(child);
    try {
      await waitReady(child, options.readyTimeoutMs ?? 10_000);
      return {
        url: `nats://${host}:${port}`,
        port,
        process: child,
        stop: () => stopWatched(child),
      };
    } catch (e) {
      lastError = e;
      await stopWatched(child);
    }
  }
  throw new OptimerError('SETUP', `could not start nats-server (${binary}): ${(lastError as Error)?.message}`, { cause: lastError });
}

function waitReady(child: ChildProcess, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let log = '';
    const timer = setTimeout(() => done(new Error(`not ready after ${timeoutMs} ms: ${log.slice(-500)}`)), timeoutMs);
    const done = (err?: Error): void => {
      clearTimeout(timer);
      child.stderr?.removeAllListeners('data');
      child.removeListener('exit', onExit);
      child.stderr?.resume(); // keep draining so the server never blocks on a full pipe
      if (err) reject(err);
      else resolve();
    };
    const onExit = (code: number | null): void => done(new Error(`exited with code ${code}: ${log.slice(-500)}`));
    child.once('exit', onExit);
    child.once('error', (e) => done(e));
    child.stderr?.on('data', (d: Buffer) => {
      log += d.toString();
      if (log.includes('Server is ready')) done();
    });
  });
}
