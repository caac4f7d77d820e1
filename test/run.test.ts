import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { connect } from 'nats';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { stopProcess } from '../shared/process.js';
import { subjects, TRIALS_STREAM, workConsumer, workerStatusCodec } from '../shared/wire.js';
import { chaosStudy } from './chaos/setup.js';
import { alive, checkInvariants, childrenOf } from './helpers/chaos.js';
import { useNatsServer } from './helpers/nats.js';
import { exited, outputOf, Processes } from './helpers/study.js';
import { useTempDir } from './helpers/temp.js';
import { waitFor } from './helpers/wait.js';

const family = inject('family');
const cli = inject('cli');
const tmp = useTempDir('run');
const nats = useNatsServer();
const procs = new Processes();
const groups: ChildProcess[] = [];
afterAll(async () => {
  await procs.stopAll();
  await Promise.all(groups.map((g) => stopProcess(g)));
});

/** `optimer run` in a process group of its own, as a shell runs a foreground job: Ctrl-C reaches it and its workers. */
function runInGroup(args: string[]): ChildProcess & { output: () => { out: string; err: string } } {
  const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  groups.push(child);
  return Object.assign(child, { output: () => ({ out, err }) });
}

describe('run', () => {
  it('run - Ctrl-C hands back the proposals its workers hold: none waits out its 60 s lease, and a rerun completes at once', async () => {
    const config = await chaosStudy(family, tmp, 'ctrlc', {
      trials: 6,
      repeat: 6,
      lease: { ackWaitSeconds: 60, trialTimeoutSeconds: 120 },
    });
    const storeDir = join(tmp, 'store-ctrlc');
    const args = ['run', config, '--nats', nats.url, '--workers', '2', '--store', storeDir, '--json'];
    const nc = await connect({ servers: nats.url });
    try {
      const busy = new Promise<void>((resolve) => {
        const sub = nc.subscribe(subjects.workers, {
          callback: (_e, m) => {
            const s = workerStatusCodec.decode(m.data, 'status');
            if (s.state === 'busy' && s.study === 'ctrlc' && s.worker.startsWith('local-')) {
              sub.unsubscribe();
              resolve();
            }
          },
        });
      });
      const first = runInGroup(args);
      await Promise.race([busy, new Promise((_, reject) => setTimeout(() => reject(new Error('no local worker got busy')), 60_000))]);
      const pids = [first.pid!, ...childrenOf(first.pid!)];
      expect(pids.length).toBe(3); // the run and its two workers
      process.kill(-first.pid!, 'SIGINT'); // Ctrl-C: the whole foreground group
      expect(await exited(first, 30_000)).toBe(130);
      expect(first.output().err).toMatch(/stopping \(the study resumes when you run the same command again\)/);
      // nothing is held under a lease: a worker pulling now gets the trial that was in hand at
      // once (delivered a second time), not after 60 s
      const queue = await nc.jetstream().consumers.get(TRIALS_STREAM, workConsumer('ctrlc'));
      const again = await queue.next({ expires: 3000 });
      expect(again?.info.deliveryCount).toBe(2);
      again!.nak(); // and back again, for the rerun
      expect(pids.filter(alive)).toEqual([]);
      const t0 = Date.now();
      const second = procs.start(cli, args);
      expect(await exited(second, 45_000)).toBe(0);
      expect(Date.now() - t0).toBeLessThan(45_000);
      await checkInvariants({ storeDir, study: 'ctrlc', budget: 6, state: 'complete', natsUrl: nats.url, maxAttempts: 3 });
    } finally {
      await nc.close();
    }
  }, 150_000);

  it('run - --workers 0 without --nats says how to start a worker on its private nats-server; one started so joins and the study completes', async () => {
    const config = await chaosStudy(family, tmp, 'alone', { trials: 3 });
    const run = procs.start(cli, ['run', config, '--workers', '0', '--store', join(tmp, 'store-alone'), '--json']);
    const hint = await waitFor(
      () =>
        /no worker has joined yet; start workers with: optimer worker --nats (nats:\/\/127\.0\.0\.1:\d+)(.*)/.exec(outputOf(run).err) ??
        undefined,
      20_000,
      'the hint to start a worker',
    ).catch((e: Error) => {
      throw new Error(`${e.message}\n${outputOf(run).err.slice(-2000)}`);
    });
    expect(hint[2]).toMatch(/listens on loopback/);
    procs.start(cli, ['worker', '--nats', hint[1]!, '--cache', join(tmp, 'cache-alone'), '--log-level', 'warn']);
    expect(await exited(run, 60_000)).toBe(0);
    expect(JSON.parse(outputOf(run).out)).toMatchObject({ study: 'alone', state: 'complete' });
  }, 90_000);
});
