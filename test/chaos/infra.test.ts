import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'nats';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { ChaosNats, checkInvariants, childrenOf, publishedResults } from '../helpers/chaos.js';
import { exited, outputOf, Processes } from '../helpers/study.js';
import { useTempDir } from '../helpers/temp.js';
import { waitFor } from '../helpers/wait.js';
import { chaosStudy } from './setup.js';

const family = inject('family');
const cli = inject('cli');
const tmp = useTempDir('chaos-infra');
const procs = new Processes();
const mounts: string[] = [];
let nats: ChaosNats;
beforeAll(async () => {
  nats = await ChaosNats.start(join(tmp, 'nats'));
});
// each case's workers stop with it: a survivor would take the next case's trials on the shared NATS
afterEach(() => procs.stopAll());
afterAll(async () => {
  await procs.stopAll();
  await nats?.kill('SIGTERM');
  for (const m of mounts) execFileSync('umount', [m]);
});

function run(config: string, storeDir: string) {
  return procs.start(cli, ['run', config, '--nats', nats.url, '--workers', '0', '--store', storeDir, '--json']);
}

async function finished(child: ReturnType<typeof run>, timeoutMs = 90_000): Promise<number | null> {
  return exited(child, timeoutMs).catch((e: Error) => {
    throw new Error(`${e.message}\n${outputOf(child).err.slice(-3000)}`);
  });
}

async function results(study: string, n: number): Promise<void> {
  const nc = await connect({ servers: nats.url });
  try {
    await waitFor(async () => (await publishedResults(nc, study)).length >= n, 60_000, `${n} results of ${study}`);
  } finally {
    await nc.close();
  }
}

describe('chaos - coordinator, NATS and disk', () => {
  it('chaos - the coordinator SIGKILLed mid-study, results published while it is down: a restart records them and completes', async () => {
    const config = await chaosStudy(family, tmp, 'ckill', { trials: 14, repeat: 2 });
    const storeDir = join(tmp, 'store-ckill');
    procs.startWorkers(cli, nats.url, join(tmp, 'cache-ckill'), 2);
    const first = run(config, storeDir);
    await results('ckill', 3);
    const pids = [first.pid!, ...childrenOf(first.pid!)];
    first.kill('SIGKILL');
    await exited(first, 10_000);
    // the workers finish what they hold and publish it while nobody records
    await new Promise((r) => setTimeout(r, 1500));
    const second = run(config, storeDir);
    expect(await finished(second)).toBe(0);
    await checkInvariants({ storeDir, study: 'ckill', budget: 14, state: 'complete', natsUrl: nats.url, gone: pids, maxAttempts: 3 });
  }, 150_000);

  it('chaos - nats-server SIGKILLed mid-study and started again on its port and store: the study completes', async () => {
    const config = await chaosStudy(family, tmp, 'nkill', { trials: 14, repeat: 2 });
    const storeDir = join(tmp, 'store-nkill');
    procs.startWorkers(cli, nats.url, join(tmp, 'cache-nkill'), 2);
    const coordinator = run(config, storeDir);
    await results('nkill', 3);
    await nats.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 1000));
    await nats.restart();
    expect(await finished(coordinator)).toBe(0);
    await checkInvariants({ storeDir, study: 'nkill', budget: 14, state: 'complete', natsUrl: nats.url, maxAttempts: 3 });
  }, 150_000);

  it('chaos - a full disk under the record stops the coordinator with a STORE error; with room again a rerun completes and the record reopens clean', async () => {
    const storeDir = join(tmp, 'store-full');
    mkdirSync(storeDir, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', storeDir]);
    mounts.push(storeDir);
    const config = await chaosStudy(family, tmp, 'full', { trials: 60 });
    procs.startWorkers(cli, nats.url, join(tmp, 'cache-full'), 2);
    const first = run(config, storeDir);
    const code = await finished(first);
    expect(code).not.toBe(0);
    expect(outputOf(first).err).toMatch(/no space left on device|ENOSPC/i);
    execFileSync('mount', ['-o', 'remount,size=32m', storeDir]);
    const second = run(config, storeDir);
    expect(await finished(second)).toBe(0);
    await checkInvariants({ storeDir, study: 'full', budget: 60, state: 'complete', natsUrl: nats.url, maxAttempts: 3 });
  }, 150_000);
});
