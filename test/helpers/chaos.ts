import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { openLevelStore } from '../../coordinator/store/level-store.js';
import type { JobRecord } from '../../coordinator/store/records.js';
import { findNatsServer, freePort } from '../../shared/nats-server.js';
import { RESULTS_STREAM, type Result, resultCodec, subjects, workerStatusCodec } from '../../shared/wire.js';
import { waitFor } from './wait.js';

/**
 * A nats-server with JetStream on a fixed loopback port and store dir, so that it can be killed
 * by pid and started again where clients expect it. With `cluster`, one node of a cluster.
 */
export class ChaosNats {
  child: ChildProcess | undefined;
  private constructor(
    readonly port: number,
    private readonly args: string[],
    /** the server's name (`-n`): what JetStream's cluster info calls a leader */
    readonly name?: string,
  ) {}

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }
  get pid(): number {
    return this.child!.pid!;
  }

  static async start(dir: string): Promise<ChaosNats> {
    mkdirSync(dir, { recursive: true });
    const port = await freePort();
    const s = new ChaosNats(port, ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dir]);
    await s.restart();
    return s;
  }

  /** Three nodes routed to each other, each with its own JetStream store under `dir`. */
  static async cluster(dir: string): Promise<ChaosNats[]> {
    const ports = await Promise.all([0, 1, 2].map(() => freePort()));
    const routes = await Promise.all([0, 1, 2].map(() => freePort()));
    const nodes = ports.map((port, i) => {
      mkdirSync(join(dir, `n${i}`), { recursive: true });
      const routeUrls = routes.filter((_, j) => j !== i).map((r) => `nats-route://127.0.0.1:${r}`);
      return new ChaosNats(
        port,
        [
          '-a',
          '127.0.0.1',
          '-p',
          String(port),
          '-js',
          '-sd',
          join(dir, `n${i}`),
          '-n',
          `n${i}`,
          '--cluster_name',
          'chaos',
          '--cluster',
          `nats://127.0.0.1:${routes[i]}`,
          '--routes',
          routeUrls.join(','),
        ],
        `n${i}`,
      );
    });
    await Promise.all(nodes.map((n) => n.restart()));
    return nodes;
  }

  /** (Re)starts the server with the same port and store; resolves when it is ready. */
  async restart(): Promise<void> {
    const child = spawn(findNatsServer(), this.args, { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child = child;
    let log = '';
    child.stderr!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-20_000)));
    await waitFor(() => log.includes('Server is ready') || child.exitCode !== null, 15_000, 'nats-server ready');
    if (child.exitCode !== null) throw new Error(`nats-server exited: ${log}`);
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const gone = new Promise((r) => c.once('exit', r));
    c.kill(signal);
    await gone;
  }
}

/** Direct children of a process (Linux /proc). */
export function childrenOf(pid: number): number[] {
  const dir = `/proc/${pid}/task`;
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((t) => {
    try {
      return readFileSync(join(dir, t, 'children'), 'utf8')
        .split(/\s+/)
        .filter(Boolean)
        .map(Number);
    } catch {
      return [];
    }
  });
}

/** Alive and not a zombie. */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Every result of a study in the results stream (what workers published), decoded. */
export async function publishedResults(nc: NatsConnection, study: string): Promise<(Result & { at: number })[]> {
  const jsm = await nc.jetstreamManager();
  const info = await jsm.streams.info(RESULTS_STREAM).catch(() => undefined);
  if (!info) return []; // no coordinator has created it yet
  const out: (Result & { at: number })[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
    const m = await jsm.streams.getMessage(RESULTS_STREAM, { seq }).catch(() => undefined);
    if (!m || m.subject !== subjects.results(study)) continue;
    try {
      out.push({ ...resultCodec.decode(m.data, 'stream'), at: m.time.getTime() });
    } catch {
      // hostile input published by a test
    }
  }
  return out;
}

/** Resolves with the trial number once `worker` reports itself busy on a trial of `study` (or on `trial`). */
export async function busyOn(nc: NatsConnection, worker: string, study: string, timeoutMs = 60_000, trial?: number): Promise<number> {
  const sub = nc.subscribe(subjects.workers);
  const t = setTimeout(() => sub.unsubscribe(), timeoutMs);
  try {
    for await (const m of sub) {
      try {
        const s = workerStatusCodec.decode(m.data, 'status');
        if (
          s.worker === worker &&
          s.state === 'busy' &&
          s.study === study &&
          s.kind === 'TRIAL' &&
          (trial === undefined || s.trial === trial)
        )
          return s.trial;
      } catch {
        // not a status
      }
    }
  } finally {
    clearTimeout(t);
    sub.unsubscribe();
  }
  throw new Error(`worker ${worker} was not busy on ${study} within ${timeoutMs} ms`);
}

export interface Invariants {
  storeDir: string;
  study: string;
  budget: number;
  state: 'complete' | 'failed';
  /** a nats-server's URL, or a cluster's URLs comma-separated */
  natsUrl: string;
  /** processes that must be gone (killed, or stopped by the test) */
  gone?: number[];
  /** trials that may end failed (the rest must be complete) */
  mayFail?: (t: JobRecord) => boolean;
  maxAttempts?: number;
}

/**
 * What every chaos case must leave behind: the study reached its budget (or stopped in `state`),
 * each trial recorded exactly once, no published result lost (a trial a worker answered in time for
 * its current run is complete), no trial issued beyond its attempts, the store reopens clean
 * (twice), and no listed process is alive.
 */
export async function checkInvariants(o: Invariants): Promise<JobRecord[]> {
  let trials: JobRecord[] = [];
  for (let open = 0; open < 2; open++) {
    const store = await openLevelStore(join(o.storeDir, 'db'), { create: false });
    try {
      const study = await store.getStudy(o.study);
      if (study?.state !== o.state) throw new Error(`study ${o.study} is ${study?.state}, expected ${o.state}`);
      trials = await store.listJobs(o.study, 'TRIAL');
    } finally {
      await store.close();
    }
  }
  const numbers = trials.map((t) => t.number);
  if (o.state === 'complete' && JSON.stringify(numbers) !== JSON.stringify(Array.from({ length: o.budget }, (_, i) => i)))
    throw new Error(`trials recorded: ${numbers.join(',')}; expected 0..${o.budget - 1} once each`);
  if (new Set(numbers).size !== numbers.length) throw new Error(`a trial is recorded twice: ${numbers.join(',')}`);
  for (const t of trials) {
    if (t.state === 'running') throw new Error(`trial ${t.number} still running`);
    if (t.state === 'complete' && !Number.isFinite(t.value)) throw new Error(`trial ${t.number} complete without a finite value`);
    if (t.state === 'failed' && !(o.mayFail?.(t) ?? false)) throw new Error(`trial ${t.number} failed: ${JSON.stringify(t.error)}`);
    if (t.state === 'failed' && !t.error?.message) throw new Error(`trial ${t.number} failed without a reason`);
    if (o.maxAttempts !== undefined && t.attempt > o.maxAttempts) throw new Error(`trial ${t.number} issued ${t.attempt} times`);
  }
  // no result lost: every good result for a recorded job's attempt made that trial complete
  const nc = await connect({ servers: o.natsUrl.split(',') });
  try {
    const created = new Map(trials.map((t) => [t.number, Date.parse(t.createdAt)]));
    for (const r of await publishedResults(nc, o.study)) {
      if (r.kind !== 'TRIAL' || r.error || r.scores.some((s) => !Number.isFinite(s.score))) continue;
      const t = trials.find((x) => x.number === r.trial);
      if (!t || created.get(r.trial) !== r.created) continue; // a superseded run of the trial
      // one that came after its last attempt had timed out is late, not lost
      if (t.state === 'failed' && t.error?.code === 'TIMEOUT' && r.at >= Date.parse(t.finishedAt ?? '')) continue;
      if (t.state !== 'complete') throw new Error(`the result of trial ${r.trial} attempt ${r.attempt} from ${r.worker} was lost`);
    }
  } finally {
    await nc.close();
  }
  const left = (o.gone ?? []).filter(alive);
  if (left.length > 0) throw new Error(`processes left behind: ${left.join(', ')}`);
  return trials;
}
