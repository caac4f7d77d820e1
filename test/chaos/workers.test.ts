import { join } from 'node:path';
import { connect } from 'nats';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { RESULTS_STREAM, subjects } from '../../shared/wire.js';
import { busyOn, ChaosNats, checkInvariants, publishedResults } from '../helpers/chaos.js';
import { exited, outputOf, Processes } from '../helpers/study.js';
import { useTempDir } from '../helpers/temp.js';
import { waitFor } from '../helpers/wait.js';
import { chaosStudy } from './setup.js';

const family = inject('family');
const cli = inject('cli');
const tmp = useTempDir('chaos-workers');
const procs = new Processes();
let nats: ChaosNats;
beforeAll(async () => {
  nats = await ChaosNats.start(join(tmp, 'nats'));
});
// each case's workers stop with it: a survivor would take the next case's trials on the shared NATS
afterEach(() => procs.stopAll());
afterAll(async () => {
  await procs.stopAll();
  await nats?.kill('SIGTERM');
});

function run(config: string, storeDir: string) {
  return procs.start(cli, ['run', config, '--nats', nats.url, '--workers', '0', '--store', storeDir, '--json']);
}

async function finished(child: ReturnType<typeof run>, timeoutMs = 90_000): Promise<number | null> {
  return exited(child, timeoutMs).catch((e: Error) => {
    throw new Error(`${e.message}\n${outputOf(child).err.slice(-3000)}`);
  });
}

describe('chaos - workers', () => {
  it('chaos - a worker SIGKILLed mid-evaluation: its trial is delivered again and completed by another worker', async () => {
    const config = await chaosStudy(family, tmp, 'wkill', { trials: 8, repeat: 6 });
    const storeDir = join(tmp, 'store-wkill');
    const [victim] = procs.startWorkers(cli, nats.url, join(tmp, 'cache-wkill'), 2);
    const coordinator = run(config, storeDir);
    const nc = await connect({ servers: nats.url });
    const trial = await busyOn(nc, 'test-1', 'wkill');
    await new Promise((r) => setTimeout(r, 150)); // inside the evaluation
    victim!.kill('SIGKILL');
    expect(await finished(coordinator)).toBe(0);
    const trials = await checkInvariants({
      storeDir,
      study: 'wkill',
      budget: 8,
      state: 'complete',
      natsUrl: nats.url,
      gone: [victim!.pid!],
    });
    expect(trials[trial]!.worker).toBe('test-2');
    await nc.close();
  }, 120_000);

  it('chaos - a trial whose worker dies on every attempt is failed after maxAttempts with the reason; the study goes on', async () => {
    const config = await chaosStudy(family, tmp, 'wdoom', {
      trials: 4,
      repeat: 3,
      lease: { ackWaitSeconds: 30, trialTimeoutSeconds: 5, maxAttempts: 2 },
    });
    const storeDir = join(tmp, 'store-wdoom');
    const coordinator = run(config, storeDir);
    const nc = await connect({ servers: nats.url });
    const killed: number[] = [];
    let doomed: number | undefined;
    // one worker at a time; each is killed as soon as it is busy on the doomed trial
    for (let i = 0; i < 2; i++) {
      const w = procs.start(cli, [
        'worker',
        '--nats',
        nats.url,
        '--cache',
        join(tmp, 'cache-wdoom'),
        '--id',
        `doomed-${i}`,
        '--log-level',
        'warn',
      ]);
      // the reissued attempt waits in the queue (its clock starts when a worker takes it); under
      // load it reaches the next worker only after the trials queued before it
      doomed = await busyOn(nc, `doomed-${i}`, 'wdoom', 120_000, doomed);
      w.kill('SIGKILL');
      killed.push(w.pid!);
      await exited(w!, 10_000);
    }
    procs.startWorkers(cli, nats.url, join(tmp, 'cache-wdoom-ok'), 1);
    expect(await finished(coordinator)).toBe(0);
    const trials = await checkInvariants({
      storeDir,
      study: 'wdoom',
      budget: 4,
      state: 'complete',
      natsUrl: nats.url,
      gone: killed,
      maxAttempts: 2,
      // only the doomed one: the clock of a trial waiting in the queue while no worker is up
      // starts when a worker takes it
      mayFail: (t) => t.number === doomed,
    });
    expect(trials[doomed!]).toMatchObject({
      state: 'failed',
      attempt: 2,
      error: { code: 'TIMEOUT', message: 'no result after 2 attempts of 5 s' },
    });
    expect(trials.some((t) => t.state === 'complete')).toBe(true);
    await nc.close();
  }, 300_000);

  it('chaos - a hanging worker (SIGSTOP): its trial times out and is reissued; after SIGCONT its late result changes nothing; duplicated results are recorded once', async () => {
    const config = await chaosStudy(family, tmp, 'whang', { trials: 14, repeat: 3, lease: { ackWaitSeconds: 30, trialTimeoutSeconds: 2 } });
    const storeDir = join(tmp, 'store-whang');
    const hung = procs.start(cli, [
      'worker',
      '--nats',
      nats.url,
      '--cache',
      join(tmp, 'cache-whang'),
      '--id',
      'hung',
      '--log-level',
      'warn',
    ]);
    const nc = await connect({ servers: nats.url });
    const busy = busyOn(nc, 'hung', 'whang');
    const coordinator = run(config, storeDir);
    const trial = await busy;
    hung.kill('SIGSTOP');
    procs.startWorkers(cli, nats.url, join(tmp, 'cache-whang-ok'), 1);
    // past the trial timeout: the trial is issued again; then the hung worker wakes up and answers too
    await new Promise((r) => setTimeout(r, 5000));
    hung.kill('SIGCONT');
    await waitFor(
      async () => (await publishedResults(nc, 'whang')).some((r) => r.trial === trial && r.worker === 'hung'),
      30_000,
      'the late result',
    );
    // every result so far, published again twice by hand (as a redelivery or a retrying worker would)
    const jsm = await nc.jetstreamManager();
    const info = await jsm.streams.info(RESULTS_STREAM);
    let copies = 0;
    for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
      const m = await jsm.streams.getMessage(RESULTS_STREAM, { seq }).catch(() => undefined);
      if (m?.subject !== subjects.results('whang')) continue;
      for (let k = 0; k < 2; k++) await nc.jetstream().publish(m.subject, m.data);
      copies += 2;
    }
    expect(copies).toBeGreaterThan(0);
    expect(await finished(coordinator)).toBe(0);
    const trials = await checkInvariants({ storeDir, study: 'whang', budget: 14, state: 'complete', natsUrl: nats.url, maxAttempts: 3 });
    expect(trials[trial]!.attempt).toBeGreaterThanOrEqual(2);
    await nc.close();
  }, 150_000);
});
