import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { connect } from 'nats';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { type Proposal, proposalCodec, resultCodec, subjects, TRIALS_STREAM, workerStatusCodec } from '../../shared/wire.js';
import { ChaosNats, checkInvariants, publishedResults } from '../helpers/chaos.js';
import { exited, outputOf, Processes } from '../helpers/study.js';
import { useTempDir } from '../helpers/temp.js';
import { waitFor } from '../helpers/wait.js';
import { chaosStudy } from './setup.js';

const family = inject('family');
const cli = inject('cli');
const tmp = useTempDir('chaos-hostile');
const procs = new Processes();
let nats: ChaosNats;
beforeAll(async () => {
  nats = await ChaosNats.start(join(tmp, 'nats'));
});
// each case's workers stop with it: a survivor would serve the next case's study
afterEach(() => procs.stopAll());
afterAll(async () => {
  await procs.stopAll();
  await nats?.kill('SIGTERM');
});

const forged = (o: Record<string, unknown>) =>
  resultCodec.encode({
    study: 'hostile',
    generation: 1,
    kind: 'TRIAL',
    trial: 0,
    label: 'x',
    attempt: 1,
    created: 0,
    worker: 'intruder',
    scores: [{ name: 'ja', score: Number.NaN, tokens: 1 }],
    timings: { fetchMs: 0, mergeMs: 0, evalMs: 0 },
    error: null,
    provider: 'cpu',
    ...o,
  });

describe('chaos - hostile input on a running study', () => {
  it('chaos - random bytes and wrong-schema messages on every subject: the coordinator and workers go on, each trial recorded once', async () => {
    const config = await chaosStudy(family, tmp, 'hostile', { trials: 12, repeat: 2 });
    const storeDir = join(tmp, 'store');
    const workers = procs.startWorkers(cli, nats.url, join(tmp, 'cache'), 2);
    const coordinator = procs.start(cli, ['run', config, '--nats', nats.url, '--workers', '0', '--store', storeDir, '--json']);
    const nc = await connect({ servers: nats.url });
    const js = nc.jetstream();
    await waitFor(async () => (await publishedResults(nc, 'hostile')).length >= 2, 60_000, 'two results');
    const garbage = () => [randomBytes(0), randomBytes(7), randomBytes(300), new TextEncoder().encode('{"study":"hostile"}')];
    const wrongSchema = [
      forged({ trial: 9999 }), // unknown trial
      forged({ study: 'nobody' }), // another study on this study's subject
      forged({ generation: 42 }), // a stale generation
      forged({ trial: 1, attempt: 9, created: 1 }), // not the current attempt, from a worker that does not hold it
      forged({ scores: [{ name: 'ja', score: Number.POSITIVE_INFINITY, tokens: 1 }], trial: 5000 }),
      forged({ scores: [{ name: 'ja', score: 1e308, tokens: 2 ** 40 }], trial: 5001 }),
      proposalCodec.encode({
        study: 'hostile',
        generation: 1,
        kind: 'TRIAL',
        trial: 0,
        label: 'x',
        attempt: 1,
        created: 0,
        weights: { ja: 1 },
      }),
      workerStatusCodec.encode({
        worker: 'ghost',
        state: 'busy',
        provider: 'cpu',
        study: 'hostile',
        generation: 1,
        kind: 'TRIAL',
        trial: 0,
        attempt: 1,
        heartbeatMs: 1,
      }),
      new Uint8Array(900 * 1024), // near max_payload
    ];
    let sent = 0;
    for (let round = 0; round < 5; round++) {
      for (const bytes of [...garbage(), ...wrongSchema]) {
        for (const s of [subjects.results('hostile'), subjects.results('nobody'), subjects.trials('nobody')]) {
          await js.publish(s, bytes).catch(() => undefined);
          sent++;
        }
        for (const s of [subjects.workers, subjects.status('hostile'), subjects.statusList]) {
          nc.publish(s, bytes);
          sent++;
        }
      }
      await nc.flush();
    }
    const code = await exited(coordinator, 90_000).catch((e: Error) => {
      throw new Error(`${e.message}\n${outputOf(coordinator).err.slice(-3000)}`);
    });
    expect(code).toBe(0);
    expect(workers.every((w) => w.exitCode === null)).toBe(true);
    const trials = await checkInvariants({ storeDir, study: 'hostile', budget: 12, state: 'complete', natsUrl: nats.url, maxAttempts: 3 });
    expect(trials.some((t) => t.worker === 'intruder')).toBe(false);
    expect(sent).toBeGreaterThan(300);
    await nc.close();
  }, 150_000);

  it('chaos - a result for a running attempt from a client that did not pull its proposal (no token, a made-up one) is dropped; a worker answers it', async () => {
    const config = await chaosStudy(family, tmp, 'forged', { trials: 4 });
    const storeDir = join(tmp, 'store-forged');
    // no worker yet: trial 0 waits in the queue, running in the record
    const coordinator = procs.start(cli, ['run', config, '--nats', nats.url, '--workers', '0', '--store', storeDir, '--json']);
    const nc = await connect({ servers: nats.url });
    const jsm = await nc.jetstreamManager();
    // an insider's view of the queue: the forger knows the attempt and its `created`, not the token
    const queued = await waitFor(
      async () => {
        const info = await jsm.streams.info(TRIALS_STREAM).catch(() => undefined);
        if (!info) return undefined;
        for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
          const m = await jsm.streams.getMessage(TRIALS_STREAM, { seq }).catch(() => undefined);
          if (m?.subject !== subjects.trials('forged')) continue;
          const p = proposalCodec.decode(m.data, 'proposal');
          if (p.trial === 0) return p;
        }
        return undefined;
      },
      60_000,
      'the proposal of trial 0',
    );
    expect(queued.token).toMatch(/^[0-9a-f]{32}$/);
    const scores = Object.keys(family.dev).map((name) => ({ name, score: 0.5, tokens: 10 }));
    const claim = (p: Proposal, token?: string) =>
      forged({ study: 'forged', trial: p.trial, attempt: p.attempt, created: p.created, scores, ...(token ? { token } : {}) });
    for (const token of [undefined, '0'.repeat(32), queued.token!.replace(/^./, (c) => (c === 'a' ? 'b' : 'a'))])
      await nc.jetstream().publish(subjects.results('forged'), claim(queued, token));
    await new Promise((r) => setTimeout(r, 1500)); // the coordinator has seen them
    procs.startWorkers(cli, nats.url, join(tmp, 'cache-forged'), 1);
    const code = await exited(coordinator, 90_000).catch((e: Error) => {
      throw new Error(`${e.message}\n${outputOf(coordinator).err.slice(-3000)}`);
    });
    expect(code).toBe(0);
    const trials = await checkInvariants({ storeDir, study: 'forged', budget: 4, state: 'complete', natsUrl: nats.url, maxAttempts: 3 });
    expect(trials.map((t) => t.worker)).toEqual(['test-1', 'test-1', 'test-1', 'test-1']);
    expect(trials[0]!.value).not.toBe(0.5);
    expect(outputOf(coordinator).err.match(/without its proposal's token/g)?.length).toBe(3);
    await nc.close();
  }, 150_000);
});
