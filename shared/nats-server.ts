import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { delimiter, join } from 'node:path';
import { OptimerError } from './errors.js';
import { stopProcess } from './process.js';

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
    for (const c of running) c.kill('SIGKILL');
  });
}

/**
 * Starts a private nats-server with JetStream on a free loopback port, its store in `storeDir`.
 * Resolves once the server says it is ready; `stop()` ends it (SIGTERM, then SIGKILL).
 */
export async function startNatsServer(options: {
  storeDir: string;
  host?: string;
  binary?: string;
  readyTimeoutMs?: number;
}): Promise<NatsServerHandle> {
  const binary = options.binary ?? findNatsServer();
  const host = options.host ?? '127.0.0.1';
  mkdirSync(options.storeDir, { recursive: true });
  let lastError: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort(host);
    const child = spawn(binary, ['-a', host, '-p', String(port), '-js', '-sd', options.storeDir], { stdio: ['ignore', 'ignore', 'pipe'] });
    killOnExit(child);
    try {
      await waitReady(child, options.readyTimeoutMs ?? 10_000);
      return {
        url: `nats://${host}:${port}`,
        port,
        process: child,
        stop: () => stopProcess(child),
      };
    } catch (e) {
      lastError = e;
      await stopProcess(child);
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
