import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { findNatsServer, freePort } from '../shared/nats-server.js';
import { stopProcess } from '../shared/process.js';
import { startNatsServer } from '../shared/nats-server.js';
import { buildFamilyPool } from './helpers/family.js';
import { exited, outputOf, Processes, writeStudyConfig } from './helpers/study.js';
import { useTempDir } from './helpers/temp.js';

const family = inject('family');
const cli = inject('cli');
const tmp = useTempDir('reliability');
const procs = new Processes();
const servers: ChildProcess[] = [];
afterAll(async () => {
  await procs.stopAll();
  await Promise.all(servers.map((s) => stopProcess(s)));
});

function optimer(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cli, ...args], { timeout: 60_000, cwd: tmp }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** Waits (bounded) until `cond()` holds, polling. */
async function waitFor(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`no ${what} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A nats-server WITHOUT JetStream (no -js) on a free loopback port, stopped after the file. */
async function startPlainNatsServer(): Promise<string> {
  const port = await freePort();
  const child = spawn(findNatsServer(), ['-a', '127.0.0.1', '-p', String(port)], { stdio: ['ignore', 'ignore', 'pipe'] });
  servers.push(child);
  let log = '';
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  await waitFor(() => log.includes('Server is ready') || child.exitCode !== null, 10_000, 'nats-server ready');
  if (child.exitCode !== null) throw new Error(`nats-server exited: ${log}`);
  return `nats://127.0.0.1:${port}`;
}

describe('reliability', () => {
  it('reliability - a worker whose NATS is gone still stops on SIGTERM, exit 0', async () => {
    const server = await startNatsServer({ storeDir: join(tmp, 'nats-gone') });
    const worker = procs.start(cli, ['worker', '--nats', server.url, '--cache', join(tmp, 'cache-gone'), '--log-level', 'info']);
    try {
      // connected and looping (there is no coordinator: it waits for one)
      await waitFor(() => outputOf(worker).err.includes('waiting for a coordinator'), 20_000, 'worker waiting');
    } finally {
      await server.stop();
    }
    // let the client notice the loss and start reconnecting
    await new Promise((r) => setTimeout(r, 1000));
    const t0 = Date.now();
    worker.kill('SIGTERM');
    const code = await exited(worker, 10_000).catch((e: Error) => {
      worker.kill('SIGKILL');
      throw new Error(`${e.message}\n${outputOf(worker).err.slice(-2000)}`);
    });
    expect(code).toBe(0);
    expect(Date.now() - t0).toBeLessThan(8000);
  }, 60_000);

  it('reliability - NATS without JetStream: the coordinator exits 2 saying how to enable it, the worker says so once and waits', async () => {
    const url = await startPlainNatsServer();
    const worker = procs.start(cli, ['worker', '--nats', url, '--cache', join(tmp, 'cache-nojs'), '--log-level', 'info']);

    const poolDir = join(tmp, 'pool-nojs');
    await buildFamilyPool(family, poolDir);
    const config = await writeStudyConfig(join(tmp, 'nojs.json'), family, poolDir, { name: 'nojs', trials: 4 });
    const r = await optimer('run', config, '--nats', url, '--workers', '0', '--store', join(tmp, 'store-nojs'));
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`the NATS server at ${url} has no JetStream`);
    expect(r.stderr).toContain("'nats-server -js'");
    expect(r.stderr).toContain("'jetstream {}'");
    const j = await optimer('run', config, '--nats', url, '--workers', '0', '--store', join(tmp, 'store-nojs'), '--json');
    expect(j.code).toBe(2);
    expect(JSON.parse(j.stderr.trim().split('\n').at(-1)!).error).toMatchObject({ code: 'SETUP', retryable: false });

    // the worker: one warning (not one per retry), and it keeps running
    await waitFor(() => outputOf(worker).err.includes('has no JetStream'), 20_000, 'worker warning');
    await new Promise((r) => setTimeout(r, 3000)); // several retries (backoff from 250 ms)
    expect(worker.exitCode).toBeNull();
    const lines = outputOf(worker)
      .err.split('\n')
      .filter((l) => l.includes('has no JetStream'));
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: 40 });
    expect(lines[0]).toContain("'nats-server -js'");
    worker.kill('SIGTERM');
    expect(await exited(worker, 10_000)).toBe(0);
  }, 90_000);
});
