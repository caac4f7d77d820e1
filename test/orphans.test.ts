import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { buildFamilyPool } from './helpers/family.js';
import { Processes, exited, outputOf, writeStudyConfig } from './helpers/study.js';
import { useTempDir } from './helpers/temp.js';
import { waitFor } from './helpers/wait.js';

const family = inject('family');
const cli = inject('cli');
const tmp = useTempDir('orphans');
const procs = new Processes();
const tracked: number[] = [];
afterAll(async () => {
  for (const pid of tracked) if (alive(pid)) process.kill(pid, 'SIGKILL');
  await procs.stopAll();
});

/** Direct children of a process (Linux /proc). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  const dir = `/proc/${pid}/task`;
  if (!existsSync(dir)) return out;
  for (const t of readdirSync(dir)) {
    try {
      out.push(
        ...readFileSync(join(dir, t, 'children'), 'utf8')
          .split(/\s+/)
          .filter(Boolean)
          .map(Number),
      );
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

function commandOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return '';
  }
}

/** Alive and not a zombie waiting for a parent (or init) to reap it. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

describe('a killed optimer run', () => {
  it('orphans - kill -9 of optimer run takes its nats-server and its workers with it', async () => {
    const poolDir = join(tmp, 'pool');
    await buildFamilyPool(family, poolDir);
    const configPath = await writeStudyConfig(join(tmp, 'study.json'), family, poolDir, { name: 'orphans', trials: 5000 });
    const storeDir = join(tmp, 'store');
    const run = procs.start(cli, ['run', configPath, '--workers', '2', '--store', storeDir, '--json']);
    const pid = run.pid!;
    // the private server (under its watchdog shell) and both workers are up
    const found = await waitFor(
      () => {
        if (!existsSync(join(storeDir, 'nats'))) return undefined;
        const kids = childrenOf(pid);
        const workers = kids.filter((k) => / worker --nats /.test(commandOf(k)));
        const servers = kids.flatMap((k) => [k, ...childrenOf(k)]).filter((k) => /^\S*nats-server -a /.test(commandOf(k)));
        const watchdogs = kids.filter((k) => commandOf(k).startsWith('/bin/sh '));
        return workers.length === 2 && servers.length === 1 ? { workers, servers, watchdogs } : undefined;
      },
      60_000,
      'the nats-server and two workers',
    ).catch((e: Error) => {
      throw new Error(`${e.message}\n${outputOf(run).err.slice(-3000)}`);
    });
    const pids = [...found.workers, ...found.servers, ...found.watchdogs];
    tracked.push(...pids);
    expect(pids.every(alive)).toBe(true);

    run.kill('SIGKILL');
    await exited(run, 5000);
    const left = await waitFor(() => (pids.some(alive) ? undefined : []), 10_000, 'the children to end').catch(() =>
      pids.filter(alive).map((p) => `${p}: ${commandOf(p)}`),
    );
    expect(left).toEqual([]);
  }, 120_000);
});
