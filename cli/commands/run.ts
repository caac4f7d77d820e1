import { spawn, type ChildProcess } from 'node:child_process';
import { availableParallelism, homedir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import {
  buildReport,
  Coordinator,
  coordinatorSource,
  DashboardServer,
  loadStudyConfig,
  openLevelStore,
  type Progress,
  type TransferSummary,
  type StudyEvent,
  type StudyConfig,
  type StudyReport,
} from '../../coordinator/index.js';
import {
  createLogger,
  DEFAULT_IDLE_POLL_MS,
  GIB,
  type Logger,
  type NatsServerHandle,
  OptimerError,
  packageRoot,
  startNatsServer,
  stopProcess,
  type WeightFeed,
} from '../../shared/index.js';
import { announceDashboard, type DashboardAddress, parseDashboardAddress } from './dashboard.js';
import { parseNumberOption, parseProvider, parseWeightFeed, printJson, WEIGHTS_AS_HELP } from '../output.js';
import { logStudyEvent } from '../event-log.js';
import { DEFAULT_PROGRESS_EVERY_S, progressMode, studyProgress } from '../progress.js';
import { writeCoordinatorFile } from '../status-source.js';
import { workerSide } from '../worker-side.js';
import { DEFAULT_STORE, renderReport, storeDbPath } from './study.js';

type Run = (fn: () => Promise<void>, json?: boolean) => Promise<void>;

const CLI = join(packageRoot, 'dist', 'cli', 'main.js');

/** A local worker whose `optimer run` died stops within this long, clean or not, ms. */
const PARENT_GONE_EXIT_MS = 3000;
/** Set by `optimer run` for the workers it starts: its pid, so a worker stops when it is gone. */
const PARENT_PID_ENV = 'OPTIMER_PARENT_PID';
/** How often a local worker checks that its `optimer run` is still its parent, ms. */
const PARENT_POLL_MS = 500;

/** With --workers 0: how long to wait for a worker to join before saying how to start one, ms. */
const JOIN_HINT_AFTER_MS = 3000;

export interface RunStudyOptions {
  config: StudyConfig;
  storeDir: string;
  workers: number;
  natsUrl?: string;
  fresh?: boolean;
  provider?: string;
  /** --weights-as for the local workers (default: theirs) */
  weightFeed?: WeightFeed;
  grpcHost?: string;
  advertiseHost?: string;
  natsReplicas?: number;
  log: Logger;
  workerLogLevel?: string;
  /** the local workers' log format (default: theirs decides, from their stderr) */
  logFormat?: string;
  /** the study's events, each with where the study stands after it (the progress display) */
  onEvent?: (e: StudyEvent, progress: Progress) => void;
  /** given, once the coordinator runs, what tells the workers' transfers (the progress display) */
  followTransfers?: (source: () => TransferSummary | null) => void;
  /** aborting stops everything cleanly; the study resumes on the next run */
  signal?: AbortSignal;
  /** serve the web dashboard here */
  dashboard?: DashboardAddress;
}

/**
 * `optimer run`: with no NATS URL, a private nats-server (JetStream store under the store
 * directory); the coordinator; N local worker processes. Stops them all at the end, on abort,
 * or on failure, and returns the report.
 */
export async function runStudy(o: RunStudyOptions): Promise<{ report: StudyReport; interrupted: boolean }> {
  const stops: (() => Promise<unknown>)[] = [];
  const stopAll = async (): Promise<void> => {
    for (const f of stops.reverse()) await f().catch(() => undefined);
    stops.length = 0;
  };
  try {
    const store = await openLevelStore(storeDbPath(o.storeDir));
    stops.push(() => store.close());
    let url = o.natsUrl;
    if (!url) {
      const nats: NatsServerHandle = await startNatsServer({ storeDir: join(o.storeDir, 'nats') });
      stops.push(() => nats.stop());
      url = nats.url;
    }
    let started: Coordinator | undefined;
    let workerSeen = false;
    const coordinator = await Coordinator.start({
      config: o.config,
      store,
      natsUrl: url,
      fresh: o.fresh ?? false,
      log: o.log,
      onLockWait: (m) => process.stderr.write(`optimer: ${m}\n`),
      ...(o.grpcHost ? { grpcHost: o.grpcHost } : {}),
      ...(o.advertiseHost ? { advertiseHost: o.advertiseHost } : {}),
      ...(o.natsReplicas ? { natsReplicas: o.natsReplicas } : {}),
      onEvent: (e) => {
        if (e.type === 'worker.seen') workerSeen = true;
        logStudyEvent(o.log, e);
        if (started) o.onEvent?.(e, started.progress());
      },
    });
    started = coordinator;
    stops.push(() => coordinator.close());
    o.followTransfers?.(() => coordinator.transfers());
    // `optimer study status --store` finds the coordinator through this note while the store is locked
    const removeNote = await writeCoordinatorFile(o.storeDir, url, o.config.name);
    stops.push(removeNote);
    if (o.dashboard) {
      const source = coordinatorSource(coordinator.status, coordinator.events, store);
      const d = await DashboardServer.start({ source, ...o.dashboard, log: o.log });
      stops.push(() => d.close());
      announceDashboard(d, o.dashboard);
    }
    if (o.workers === 0 && !coordinator.complete) {
      // no local workers: when none has joined after a heartbeat or so, say how to start one
      // (a private nats-server listens on loopback only)
      const joinUrl = url;
      const hint = setTimeout(() => {
        if (workerSeen || coordinator.complete) return;
        const where = o.natsUrl ? '' : ' (this private nats-server listens on loopback: run it on this machine, or give --nats)';
        process.stderr.write(`optimer: no worker has joined yet; start workers with: optimer worker --nats ${joinUrl}${where}\n`);
      }, JOIN_HINT_AFTER_MS);
      hint.unref();
      stops.push(async () => clearTimeout(hint));
    }
    const children: ChildProcess[] = [];
    for (let i = 0; i < o.workers; i++) {
      const args = [
        CLI,
        'worker',
        '--nats',
        url,
        // one folder for all of them, no limit: a limit needs a folder of its own (the blobs it evicts
        // may be another worker's), and the store's cache is kept for the study's next run
        '--cache',
        join(o.storeDir, 'cache'),
        '--id',
        `local-${i + 1}`,
        '--log-level',
        o.workerLogLevel ?? 'warn',
      ];
      if (o.provider) args.push('--provider', o.provider);
      if (o.weightFeed) args.push('--weights-as', o.weightFeed);
      if (o.logFormat) args.push('--log-format', o.logFormat);
      // the local workers share this machine: each gets its share of the cores, not all of them
      const share = String(Math.max(1, Math.floor(availableParallelism() / o.workers)));
      args.push('--merge-threads', share, '--intra-op-threads', share);
      // an IPC channel: the worker stops when it closes, that is when this process dies however
      const child = spawn(process.execPath, args, {
        stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
        env: { ...process.env, [PARENT_PID_ENV]: String(process.pid) },
      });
      child.channel?.unref(); // the channel alone must not keep this process alive
      children.push(child);
    }
    stops.push(() => Promise.all(children.map((c) => stopProcess(c, 10_000))));
    const aborted = new Promise<void>((resolve) => {
      if (o.signal?.aborted) resolve();
      o.signal?.addEventListener('abort', () => resolve(), { once: true });
    });
    await Promise.race([coordinator.done(), aborted]);
    const interrupted = !coordinator.complete;
    await coordinator.close();
    const report = await buildReport(store, o.config.name);
    return { report, interrupted };
  } finally {
    await stopAll();
  }
}

export function registerRun(program: Command, run: Run): void {
  program
    .command('run')
    .description('run a study: a coordinator, local workers, and (without --nats) a private nats-server')
    .argument('<config>', 'study config (YAML or JSON)')
    .option('--workers <n>', 'local worker processes to start', '2')
    .option(
      '--nats <url>',
      "use this NATS (JetStream) server and the workers attached to it (a cluster: every node's URL, comma-separated)",
    )
    .option('--store <dir>', 'where studies are recorded (LevelDB, JetStream store, shard cache)', DEFAULT_STORE)
    .option('--fresh', 'forget earlier trials of this study and start over')
    .option('--provider <name>', 'execution provider for the local workers (cpu, cuda, webgpu)')
    .option('--weights-as <how>', `the local workers': ${WEIGHTS_AS_HELP}`)
    .option('--grpc-host <host>', 'address the shard seeder listens on', '127.0.0.1')
    .option('--advertise-host <host>', 'host name workers should use to reach the seeder (default: --grpc-host)')
    .option('--nats-replicas <n>', 'JetStream copies of the streams and buckets optimer creates (3 on a three-node cluster)', '1')
    .option('--log-level <level>', 'coordinator log level (fatal, error, warn, info, debug)', 'warn')
    .option('--log-format <format>', 'pretty or json (default: pretty on a terminal, else json; $OPTIMER_LOG_FORMAT)')
    .option(
      '--progress-every <s>',
      'seconds between plain progress lines on stderr when it is not a terminal',
      String(DEFAULT_PROGRESS_EVERY_S),
    )
    .option(
      '--dashboard [address]',
      `serve the web dashboard on PORT or HOST:PORT (default 127.0.0.1:8710; token: $OPTIMER_DASHBOARD_TOKEN)`,
    )
    .option('--json', 'print the report as one JSON object')
    .action((configPath: string, o) =>
      run(async () => {
        const workers = parseNumberOption(o.workers, '--workers', { min: 0, integer: true });
        const natsReplicas = parseNumberOption(o.natsReplicas, '--nats-replicas', { min: 1, integer: true });
        if (o.provider) parseProvider(o.provider);
        const weightFeed = o.weightsAs === undefined ? undefined : parseWeightFeed(o.weightsAs);
        const everyS = parseNumberOption(o.progressEvery, '--progress-every', { min: 0.1 });
        const dashboard = o.dashboard === undefined ? undefined : parseDashboardAddress(o.dashboard, '--dashboard');
        const config = await loadStudyConfig(configPath);
        const bar = studyProgress({
          study: config.name,
          budget: config.trials,
          mode: progressMode(Boolean(o.json)),
          everyMs: everyS * 1000,
        });
        const abort = new AbortController();
        const onSignal = (): void => {
          process.stderr.write('\nstopping (the study resumes when you run the same command again)…\n');
          abort.abort();
        };
        process.once('SIGINT', onSignal);
        process.once('SIGTERM', onSignal);
        try {
          const { report, interrupted } = await runStudy({
            config,
            storeDir: o.store,
            workers,
            natsUrl: o.nats,
            fresh: Boolean(o.fresh),
            provider: o.provider,
            ...(weightFeed ? { weightFeed } : {}),
            grpcHost: o.grpcHost,
            advertiseHost: o.advertiseHost,
            natsReplicas,
            log: createLogger('coordinator', o.logLevel, o.logFormat),
            workerLogLevel: o.logLevel,
            ...(o.logFormat ? { logFormat: o.logFormat } : {}),
            onEvent: (e, p) => bar.onEvent(e, p),
            followTransfers: (source) => bar.followTransfers(source),
            signal: abort.signal,
            ...(dashboard ? { dashboard } : {}),
          });
          bar.stop();
          if (o.json) printJson(report);
          else process.stdout.write(`${renderReport(report)}\n`);
          if (interrupted) process.exitCode = 130;
        } finally {
          bar.stop();
          process.removeListener('SIGINT', onSignal);
          process.removeListener('SIGTERM', onSignal);
        }
      }, o.json),
    );

  program
    .command('worker')
    .description('join a study mesh: pull proposals from NATS, fetch shards, merge, evaluate, report')
    .requiredOption('--nats <url>', "NATS (JetStream) server of the mesh (a cluster: every node's URL, comma-separated)")
    .option('--cache <dir>', 'content-addressed cache of shards and evaluation sets', join(homedir(), '.cache', 'optimer', 'blobs'))
    .option(
      '--cache-max-gb <gb>',
      'most the cache may hold, GiB (blobs and partial files); least recently used blobs are evicted first, never those in use; needs a --cache no other worker uses (default: no limit)',
    )
    .option('--provider <name>', 'execution provider (cpu, cuda, webgpu); default: what the study asks for, else cpu')
    .option('--id <name>', 'worker name in records and logs (default: host-pid)')
    .option('--merge-threads <n>', 'threads of the native merge (default: one per core; `optimer run` gives its workers a share each)')
    .option('--intra-op-threads <n>', "ONNX Runtime's intra-op threads (default: ONNX Runtime's, one per core)")
    .option('--weights-as <how>', WEIGHTS_AS_HELP)
    .option(
      '--advertise-provider <name>',
      'the provider it says it has, for study requirements (default: --provider, else cpu); evaluation is not changed',
    )
    .option('--device-name <name>', 'the device name it advertises (default: the GPU nvidia-smi names, else the CPU)')
    .option('--memory-gb <gb>', 'the memory it advertises (default: GPU memory from nvidia-smi, else system RAM)')
    .option('--only-when-idle', 'take trials only while the GPU is idle; hand a running one back when its owner needs it')
    .option('--idle-command <cmd>', 'the idle check for --only-when-idle, run by /bin/sh: exit 0 = idle (default: nvidia-smi)')
    .option('--idle-poll-ms <ms>', 'how often the idle check runs', String(DEFAULT_IDLE_POLL_MS))
    .option('--studies <names>', 'serve only these studies (comma-separated)')
    .option('--departments <names>', 'serve only studies of these departments (comma-separated)')
    .option('--serve-host <host>', 'where to serve cached pieces to peers (default: the address this machine reaches NATS from)')
    .option('--serve-port <n>', 'port for serving pieces to peers (default: any free one)')
    .option('--advertise-host <host>', 'host peers are told to fetch from (default: --serve-host)')
    .option('--no-serve', 'do not serve cached pieces to peers (fetch from them all the same)')
    .option('--log-level <level>', 'log level', 'info')
    .option('--log-format <format>', 'pretty or json (default: pretty on a terminal, else json; $OPTIMER_LOG_FORMAT)')
    .action((o) =>
      run(async () => {
        const log = createLogger('worker', o.logLevel, o.logFormat);
        // started by `optimer run`: when that process ends, however it ends (SIGKILL included),
        // the worker stops too, not to outlive it
        let started = false;
        const parentGone = new Promise<void>((resolve) => {
          // launched by `optimer run`: it names itself, since the worker may start after it died
          // (no channel left to see close); then the channel's close, or a new parent pid, says so
          const parent = Number(process.env[PARENT_PID_ENV] ?? 0);
          if (!parent) return;
          if (process.ppid !== parent || !process.connected) return resolve();
          process.once('disconnect', () => resolve());
          setInterval(() => {
            if (process.ppid !== parent) resolve();
          }, PARENT_POLL_MS).unref();
        });
        void parentGone.then(() => {
          if (!started) process.exit(0); // nothing to close yet
        });
        const { Worker } = await workerSide();
        const worker = await Worker.start({
          natsUrl: o.nats,
          cacheDir: o.cache,
          ...(o.cacheMaxGb !== undefined ? { cacheMaxBytes: cacheMaxBytes(o.cacheMaxGb) } : {}),
          log,
          ...(o.id ? { id: o.id } : {}),
          ...(o.provider ? { provider: parseProvider(o.provider) } : {}),
          ...(o.mergeThreads ? { mergeThreads: parseNumberOption(o.mergeThreads, '--merge-threads', { min: 1, integer: true }) } : {}),
          ...(o.intraOpThreads
            ? { intraOpThreads: parseNumberOption(o.intraOpThreads, '--intra-op-threads', { min: 1, integer: true }) }
            : {}),
          ...(o.weightsAs ? { weightFeed: parseWeightFeed(o.weightsAs) } : {}),
          advertise: {
            ...(o.advertiseProvider ? { provider: parseProvider(o.advertiseProvider) } : {}),
            ...(o.deviceName ? { deviceName: String(o.deviceName) } : {}),
            ...(o.memoryGb !== undefined ? { memoryGb: parseNumberOption(o.memoryGb, '--memory-gb', { min: 0 }) } : {}),
          },
          ...(o.onlyWhenIdle ? { onlyWhenIdle: true } : {}),
          ...(o.idleCommand ? { idleCommand: String(o.idleCommand) } : {}),
          idlePollMs: parseNumberOption(o.idlePollMs, '--idle-poll-ms', { min: 10, integer: true }),
          ...(o.studies ? { studies: list(o.studies) } : {}),
          ...(o.departments ? { departments: list(o.departments) } : {}),
          serve: o.serve !== false,
          ...(o.serveHost ? { serveHost: o.serveHost } : {}),
          ...(o.servePort ? { servePort: parseNumberOption(o.servePort, '--serve-port', { min: 0, integer: true }) } : {}),
          ...(o.advertiseHost ? { advertiseHost: o.advertiseHost } : {}),
        });
        started = true;
        // SIGINT/SIGTERM: a clean stop, exit 0 (close() is bounded in time, NATS reachable or
        // not); a second signal finds no handler and ends the process at once
        const stopped = new Promise<void>((resolve) => {
          const stop = (): void => void worker.close().finally(resolve);
          process.once('SIGINT', stop);
          process.once('SIGTERM', stop);
          // the parent is gone (killed): nobody waits for a clean stop, and with the private NATS
          // and the seeder gone with it a close step may wait out its bound; cap it
          void parentGone.then(() => {
            setTimeout(() => process.exit(0), PARENT_GONE_EXIT_MS).unref();
            stop();
          });
        });
        await Promise.race([worker.closed(), stopped]);
        await worker.close();
        process.removeAllListeners('disconnect');
        process.channel?.unref(); // the channel must not keep a stopped worker alive
        // whatever else may still hold the event loop (a native handle, a library timer), the
        // worker has stopped: do not linger
        setTimeout(() => process.exit(), 2000).unref();
      }),
    );
}

/** `--cache-max-gb`: a positive number of GiB, in bytes. */
function cacheMaxBytes(value: string): number {
  const gb = Number(value);
  if (String(value).trim() === '' || !Number.isFinite(gb) || gb <= 0)
    throw new OptimerError('BAD_ARGUMENT', `--cache-max-gb '${value}': expected a positive number of GiB (leave it out for no limit)`);
  return Math.floor(gb * GIB);
}

function list(value: string): string[] {
  return String(value)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}
