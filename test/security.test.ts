import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { CLIENT_OPTIONS, configureGrpcTls, grpc, grpcClientCredentials, Seeder, ShardServiceClient } from '../shared/index.js';
import { silentLogger } from '../shared/logging.js';
import { configureNats, connectNats } from '../shared/nats.js';
import { type NatsServerHandle, startNatsServer } from '../shared/nats-server.js';
import { HOLDER_TTL_MS, HOLDERS_BUCKET, LOCKS_BUCKET, STUDIES_BUCKET } from '../shared/wire.js';
import { StudyBoard } from '../worker/study-board.js';
import { makeCerts, type Certs } from './helpers/certs.js';
import { buildFamilyPool } from './helpers/family.js';
import { exited, outputOf, Processes, writeStudyConfig } from './helpers/study.js';
import { useTempDir } from './helpers/temp.js';

const family = inject('family');
const cli = inject('cli');
const tmp = useTempDir('security');
const procs = new Processes();
const deploy = join(import.meta.dirname, '..', 'deploy', 'nats');
const PASSWORD: Record<string, string> = { coordinator: 'c-secret', worker: 'w-secret', viewer: 'v-secret' };
let certs: Certs;
let single: NatsServerHandle;
let depts: NatsServerHandle;
let tlsUrl: string;

/** A server config in its own dir, with the deploy/ files it includes copied beside it. */
function serverConfig(name: string, body: string, includes: string[]): string {
  const dir = join(tmp, name);
  mkdirSync(dir, { recursive: true });
  for (const f of includes) copyFileSync(join(deploy, f), join(dir, f));
  writeFileSync(join(dir, 'server.conf'), body);
  return join(dir, 'server.conf');
}

beforeAll(async () => {
  certs = makeCerts(mkdirSync(join(tmp, 'certs'), { recursive: true }) ?? join(tmp, 'certs'));
  for (const [role, pw] of Object.entries(PASSWORD)) process.env[`OPTIMER_${role.toUpperCase()}_PASSWORD`] = pw;
  for (const d of ['PHYSICS', 'CHEMISTRY'])
    for (const r of Object.keys(PASSWORD)) process.env[`OPTIMER_${d}_${r.toUpperCase()}_PASSWORD`] = `${d}-${r}`;
  const tls = `tls { cert_file: "${certs.server.cert}", key_file: "${certs.server.key}", ca_file: "${certs.ca}", verify: true, timeout: 2 }\n`;
  single = await startNatsServer({
    storeDir: join(tmp, 'js1'),
    config: serverConfig('single', `${tls}include auth.conf\n`, ['auth.conf', 'roles.conf']),
  });
  tlsUrl = `tls://127.0.0.1:${single.port}`;
  depts = await startNatsServer({
    storeDir: join(tmp, 'js2'),
    config: serverConfig('depts', 'include departments.conf\n', ['departments.conf', 'roles.conf']),
  });
}, 60_000);

afterAll(async () => {
  await procs.stopAll();
  configureNats({});
  configureGrpcTls(undefined);
  await single?.stop();
  await depts?.stop();
});

let built: Promise<string> | undefined;
/** The family's pool, built once for the studies of this file. */
function pool(): Promise<string> {
  built ??= buildFamilyPool(family, join(tmp, 'pool')).then(() => join(tmp, 'pool'));
  return built;
}
const tlsFiles = () => ({ ca: certs.ca, cert: certs.client.cert, key: certs.client.key });
/** A nats.js connection as `user` over the TLS server, with the role's inbox prefix. */
function as(user: string): Promise<NatsConnection> {
  return connect({
    servers: `127.0.0.1:${single.port}`,
    user,
    pass: PASSWORD[user]!,
    inboxPrefix: `_INBOX_${user}`,
    tls: { caFile: certs.ca, certFile: certs.client.cert, keyFile: certs.client.key },
    timeout: 5000,
  });
}
/** Whether subscribing to `subject` is refused (a denied subscription closes with a permissions error). */
async function subscribeDenied(nc: NatsConnection, subject: string): Promise<boolean> {
  const sub = nc.subscribe(subject);
  const r = await Promise.race([
    (async () => {
      try {
        for await (const _ of sub) return 'message';
        return 'closed';
      } catch (e) {
        return (e as Error).message;
      }
    })(),
    new Promise<string>((res) => setTimeout(() => res('open'), 1500)),
  ]);
  sub.unsubscribe();
  return /permission/i.test(r);
}
function envFor(user: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = {
    ...process.env,
    OPTIMER_NATS_USER: user,
    OPTIMER_NATS_PASSWORD: PASSWORD[user] ?? user.toUpperCase(),
    ...extra,
  };
  for (const k of Object.keys(e)) if (/^OPTIMER_(COORDINATOR|WORKER|VIEWER|PHYSICS|CHEMISTRY)_/.test(k)) delete e[k];
  return e;
}
const natsTls = () => ({ OPTIMER_NATS_TLS_CA: certs.ca, OPTIMER_NATS_TLS_CERT: certs.client.cert, OPTIMER_NATS_TLS_KEY: certs.client.key });
const grpcTls = () => ({ OPTIMER_GRPC_TLS_CA: certs.ca, OPTIMER_GRPC_TLS_CERT: certs.client.cert, OPTIMER_GRPC_TLS_KEY: certs.client.key });

describe('security', () => {
  it('security - a client without credentials, or with a wrong password, is refused with a clear message', async () => {
    configureNats({ tls: tlsFiles() });
    await expect(connectNats(tlsUrl, 'anonymous')).rejects.toThrow(/refused our credentials \(no credentials\)/);
    configureNats({ user: 'worker', password: 'wrong', tls: tlsFiles() });
    await expect(connectNats(tlsUrl, 'wrong')).rejects.toThrow(/refused our credentials \(user 'worker'\)/);
    // credentials in the URL work, and never appear in a message
    configureNats({ tls: tlsFiles() });
    const nc = await connectNats(`tls://viewer:${PASSWORD.viewer}@127.0.0.1:${single.port}`, 'viewer-url');
    await nc.close();
    await expect(connectNats(`tls://viewer:nope@127.0.0.1:${single.port}`, 'x')).rejects.toThrow(/viewer:\*\*\*@/);
  });

  it('security - a TLS client without a certificate gets our message, not a bare TIMEOUT', async () => {
    configureNats({ user: 'viewer', password: PASSWORD.viewer!, tls: { ca: certs.ca } });
    const err = await connectNats(tlsUrl, 'no-cert').catch((e: Error) => e);
    expect((err as Error).message).toMatch(/TLS|certificate/);
    configureNats({});
  }, 20_000);

  it('security - a worker cannot read proposals or results nor publish proposals; a viewer cannot read proposals nor publish results', async () => {
    const worker = await as('worker');
    const viewer = await as('viewer');
    try {
      expect(await subscribeDenied(worker, 'optimer.v1.trials.>')).toBe(true);
      expect(await subscribeDenied(worker, 'optimer.v1.results.>')).toBe(true);
      expect(await subscribeDenied(worker, '_INBOX_coordinator.>')).toBe(true);
      // the mesh's statuses it may hear: the fair share between several studies counts them
      expect(await subscribeDenied(worker, 'optimer.v1.workers')).toBe(false);
      await expect(worker.jetstream().publish('optimer.v1.trials.x', new Uint8Array(1), { timeout: 2000 })).rejects.toThrow(/permission/i);
      expect(await subscribeDenied(viewer, 'optimer.v1.trials.>')).toBe(true);
      expect(await subscribeDenied(viewer, '_INBOX_worker.>')).toBe(true);
      await expect(viewer.jetstream().publish('optimer.v1.results.x', new Uint8Array(1), { timeout: 2000 })).rejects.toThrow(/permission/i);
      // nor can it pull proposals from a study's work consumer
      await expect(
        viewer.request('$JS.API.CONSUMER.MSG.NEXT.OPTIMER_TRIALS.optimer-workers-x', new Uint8Array(0), { timeout: 1000 }),
      ).rejects.toThrow(/permission/i);
    } finally {
      await worker.close();
      await viewer.close();
    }
  });

  it('security - a worker watches the announcements and the study locks (so it leaves an abandoned study alone) and uses the piece tracker, and writes neither locks nor announcements', async () => {
    const coordinator = await as('coordinator');
    const worker = await as('worker');
    let board: StudyBoard | undefined;
    try {
      const locks = await coordinator.jetstream().views.kv(LOCKS_BUCKET, { history: 1, ttl: 10_000 });
      await locks.put('held-study', '{}');
      const studies = await coordinator.jetstream().views.kv(STUDIES_BUCKET, { history: 1 });
      await studies.put('held-study', '{}');
      await coordinator.jetstream().views.kv(HOLDERS_BUCKET, { history: 1, ttl: HOLDER_TTL_MS });
      const js = worker.jetstream();
      // what the worker does (worker/study-board.ts, worker/shards/holders.ts): each was denied
      board = await StudyBoard.open(js);
      expect(board.announced()).toEqual(['held-study']);
      expect([...(board.held() ?? [])]).toEqual(['held-study']);
      expect((await board.read('held-study'))?.revision).toBeGreaterThan(0);
      await board.recheck();
      expect(board.stale).toBeUndefined();
      const holders = await js.views.kv(HOLDERS_BUCKET, { ttl: HOLDER_TTL_MS, history: 1 });
      await holders.put(`${'a'.repeat(64)}.beef`, new Uint8Array(3));
      const watch = await holders.watch({ key: `${'a'.repeat(64)}.*` });
      for await (const e of watch) {
        expect(e.key).toBe(`${'a'.repeat(64)}.beef`);
        break;
      }
      watch.stop();
      for (const bucket of [LOCKS_BUCKET, STUDIES_BUCKET])
        await expect(js.publish(`$KV.${bucket}.held-study`, new Uint8Array(1), { timeout: 2000 })).rejects.toThrow(/permission/i);
    } finally {
      board?.close();
      await worker.close();
      await coordinator.close();
    }
  });

  it('security - a gRPC client without a certificate cannot fetch shards; one with a certificate can', async () => {
    const blob = join(tmp, 'blob.bin');
    writeFileSync(blob, 'hello shards');
    const sha = (await import('node:crypto')).createHash('sha256').update('hello shards').digest('hex');
    configureGrpcTls({ ca: certs.ca, cert: certs.server.cert, key: certs.server.key });
    const seeder = new Seeder(silentLogger());
    seeder.register(sha, blob);
    const address = await seeder.start('127.0.0.1');
    const fetchWith = async (creds: grpc.ChannelCredentials): Promise<string> => {
      const c = new ShardServiceClient(address, creds, CLIENT_OPTIONS) as unknown as grpc.Client & {
        fetch(req: unknown, opts: unknown): AsyncIterable<{ data: Buffer }>;
      };
      try {
        let s = '';
        for await (const chunk of c.fetch({ sha256: sha, offset: 0 }, { deadline: Date.now() + 5000 })) s += chunk.data.toString();
        return s;
      } finally {
        c.close();
      }
    };
    try {
      await expect(fetchWith(grpc.credentials.createInsecure())).rejects.toThrow();
      await expect(fetchWith(grpc.credentials.createSsl(await import('node:fs').then((f) => f.readFileSync(certs.ca))))).rejects.toThrow();
      configureGrpcTls(tlsFiles());
      expect(await fetchWith(grpcClientCredentials())).toBe('hello shards');
    } finally {
      await seeder.close?.();
      configureGrpcTls(undefined);
    }
  });

  it('security - a study completes over TLS NATS and mutual-TLS gRPC with coordinator and worker credentials; a viewer reads its status', async () => {
    const poolDir = await pool();
    const config = await writeStudyConfig(join(tmp, 'study.json'), family, poolDir, { name: 'secure', trials: 6 });
    const coordinator = procs.start(
      cli,
      ['run', config, '--workers', '0', '--nats', tlsUrl, '--store', join(tmp, 'store'), '--json', '--log-level', 'warn'],
      envFor('coordinator', { ...natsTls(), ...grpcTls() }),
    );
    // the viewer asks for the status while the coordinator waits for a worker
    let status: { out: string; err: string } = { out: '', err: '' };
    for (let i = 0; i < 40 && !status.out.includes('"state"'); i++) {
      const v = procs.start(cli, ['study', 'status', 'secure', '--nats', tlsUrl, '--json'], envFor('viewer', natsTls()));
      await exited(v, 15_000);
      status = outputOf(v);
      if (!status.out.includes('"state"')) await new Promise((r) => setTimeout(r, 250));
    }
    expect(status.out, status.err).toContain('"state"');
    const worker = procs.start(
      cli,
      ['worker', '--nats', tlsUrl, '--cache', join(tmp, 'cache'), '--id', 'secure-1', '--log-level', 'warn'],
      envFor('worker', { ...natsTls(), ...grpcTls() }),
    );
    expect(await exited(coordinator, 120_000), outputOf(coordinator).err).toBe(0);
    const report = JSON.parse(outputOf(coordinator).out) as { state: string; trials: { complete: number; failed: number } };
    expect(report.state).toBe('complete');
    expect(report.trials.complete).toBe(6);
    expect(report.trials.failed).toBe(0);
    worker.kill('SIGTERM');
    await exited(worker, 30_000);
    // under the worker role it joined the piece tracker, to serve its cache to peers
    expect(outputOf(worker).err).not.toContain('cannot serve pieces to peers');
  }, 180_000);

  it("security - one department cannot see another department's studies; a shared study's status is visible to the importing one", async () => {
    const url = depts.url;
    const env = (user: string) => ({
      ...envFor(user),
      OPTIMER_NATS_PASSWORD: `${user.split('-')[0]!.toUpperCase()}-${user.split('-')[1]}`,
    });
    const config = await writeStudyConfig(join(tmp, 'shared.json'), family, await pool(), { name: 'shared-physics', trials: 4 });
    const coordinator = procs.start(
      cli,
      ['run', config, '--workers', '0', '--nats', url, '--store', join(tmp, 'store-physics'), '--json'],
      env('physics-coordinator'),
    );
    const statusAs = async (user: string, study: string): Promise<{ out: string; err: string }> => {
      const v = procs.start(cli, ['study', 'status', study, '--nats', url, '--json'], env(user));
      await exited(v, 15_000);
      return outputOf(v);
    };
    let physics = { out: '', err: '' };
    for (let i = 0; i < 40 && coordinator.exitCode === null && !physics.out.includes('"state"'); i++) {
      physics = await statusAs('physics-viewer', 'shared-physics');
      if (!physics.out.includes('"state"')) await new Promise((r) => setTimeout(r, 250));
    }
    expect(physics.out, `${physics.err}\n${outputOf(coordinator).err}`).toContain('"state"');
    // the exported study answers chemistry's viewer through the import
    expect((await statusAs('chemistry-viewer', 'shared-physics')).out).toContain('"state"');
    // chemistry's JetStream holds none of physics' streams, consumers or announcements
    const chem = await connect({
      servers: url,
      user: 'chemistry-coordinator',
      pass: 'CHEMISTRY-coordinator',
      inboxPrefix: '_INBOX_chemistry-coordinator',
    });
    try {
      const jsm = await chem.jetstreamManager();
      await expect(jsm.streams.info('OPTIMER_TRIALS')).rejects.toThrow(/not found/i);
      expect(await subscribeDenied(chem, '_INBOX_physics-worker.>')).toBe(true);
    } finally {
      await chem.close();
    }
    // a physics worker ends the study; a chemistry worker would never have seen it
    const worker = procs.start(
      cli,
      ['worker', '--nats', url, '--cache', join(tmp, 'cache-p'), '--id', 'p-1', '--log-level', 'warn'],
      env('physics-worker'),
    );
    expect(await exited(coordinator, 120_000), outputOf(coordinator).err).toBe(0);
    expect((JSON.parse(outputOf(coordinator).out) as { trials: { complete: number } }).trials.complete).toBe(4);
    worker.kill('SIGTERM');
    await exited(worker, 30_000);
  }, 180_000);
});
