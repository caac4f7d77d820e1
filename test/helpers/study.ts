import { spawn, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { FamilyFiles } from '../../shared/family/build.js';
import { stopProcess } from '../../shared/process.js';

/** Writes a study config over the family's pool (already built at `poolDir`). */
export async function writeStudyConfig(
  path: string,
  f: FamilyFiles,
  poolDir: string,
  extra: Record<string, unknown> = {},
): Promise<string> {
  const config = {
    name: 'family',
    pool: poolDir,
    bounds: [0, 1],
    objective: { sets: Object.keys(f.dev).map((n) => ({ name: n, path: f.dev[n], test: f.test[n] })) },
    trials: 40,
    sampler: { name: 'tpe', seed: 1 },
    ...extra,
  };
  await writeFile(path, JSON.stringify(config, null, 2));
  return path;
}

/** Child processes started by a test, all stopped (SIGKILL after a grace period) at the end. */
export class Processes {
  private readonly children: ChildProcess[] = [];

  start(cli: string, args: string[], env: NodeJS.ProcessEnv = process.env): ChildProcess {
    const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8');
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: string) => (out += d));
    child.stderr!.on('data', (d: string) => (err += d));
    Object.assign(child, { output: () => ({ out, err }) });
    this.children.push(child);
    return child;
  }

  startWorkers(cli: string, natsUrl: string, cacheDir: string, n: number, logLevel = 'warn'): ChildProcess[] {
    return Array.from({ length: n }, (_, i) =>
      this.start(cli, ['worker', '--nats', natsUrl, '--cache', join(cacheDir, `w${i}`), '--id', `test-${i + 1}`, '--log-level', logLevel]),
    );
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.children.map((c) => stopProcess(c)));
  }
}

export function exited(child: ChildProcess, timeoutMs = 120_000): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`process did not exit in ${timeoutMs} ms`)), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(t);
      resolve(code);
    });
  });
}

export function outputOf(child: ChildProcess): { out: string; err: string } {
  return (child as unknown as { output: () => { out: string; err: string } }).output();
}
