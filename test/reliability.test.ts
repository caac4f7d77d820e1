import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { DEFAULT_FAMILY_SHAPE, loadFamilyParams } from '../shared/family/build.js';
import { familyToOnnx } from '../shared/family/to-onnx.js';
import { node, tensor, writeModel } from '../shared/onnx/build.js';
import { buildPool } from '../shared/pool/build.js';
import { findNatsServer, freePort } from '../shared/nats-server.js';
import { stopProcess } from '../shared/process.js';
import { startNatsServer } from '../shared/nats-server.js';
import { flipByte } from './helpers/corrupt.js';
import { buildFamilyPool } from './helpers/family.js';
import { exited, outputOf, Processes, writeStudyConfig } from './helpers/study.js';
import { useTempDir } from './helpers/temp.js';
import { waitFor } from './helpers/wait.js';

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

/**
 * The family's model with a learned position embedding of `positions` rows added to the token
 * embedding (so a longer sequence makes ONNX Runtime's Gather fail), and without the metadata
 * that tells optimer its context length: a pool of it does not know the context length.
 */
async function writePositionalModel(path: string, paramsOf: string, positions: number): Promise<void> {
  const model = familyToOnnx(DEFAULT_FAMILY_SHAPE, await loadFamilyParams(paramsOf));
  model.metadataProps = [];
  const g = model.graph!;
  g.node!.find((n) => n.output![0] === 'emb')!.output = ['tok_emb'];
  const int64 = (v: number) => new Uint8Array(BigInt64Array.from([BigInt(v)]).buffer);
  g.initializer!.push(
    tensor('P', 'float32', [positions, DEFAULT_FAMILY_SHAPE.dim], new Uint8Array(positions * DEFAULT_FAMILY_SHAPE.dim * 4)),
    tensor('c0', 'int64', [], int64(0)),
    tensor('c1', 'int64', [], int64(1)),
  );
  g.node!.unshift(
    node('Shape', ['input_ids'], ['ids_shape']),
    node('Gather', ['ids_shape', 'c1'], ['seq_len']),
    node('Range', ['c0', 'seq_len', 'c1'], ['positions']),
    node('Gather', ['P', 'positions'], ['pos_emb']),
  );
  g.node!.splice(g.node!.findIndex((n) => n.output![0] === 'tok_emb') + 1, 0, node('Add', ['tok_emb', 'pos_emb'], ['emb']));
  await writeModel(path, model);
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

  it('reliability - eval and export verify the shards: a flipped byte is a BAD_POOL error naming the shard, exit 2', async () => {
    const poolDir = join(tmp, 'pool-flipped');
    await buildFamilyPool(family, poolDir);
    const sets = Object.entries(family.dev).flatMap(([n, p]) => ['--set', `${n}=${p}`]);
    const ok = await optimer('eval', '--pool', poolDir, '--weights', 'ja=0.5', ...sets);
    expect(ok.code).toBe(0);
    const manifest = JSON.parse(await readFile(join(poolDir, 'manifest.json'), 'utf8'));
    const shard: string = manifest.vectors[0].blob.shards[0].sha256;
    // one bit of one weight in the middle of the shard
    await flipByte(join(poolDir, 'shards', shard));

    const r = await optimer('eval', '--pool', poolDir, '--weights', 'ja=0.5', ...sets);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(new RegExp(`^optimer: ${poolDir}: shard ${shard} is corrupt \\(its content hashes to [0-9a-f]{64}\\)\n$`));
    const j = await optimer('eval', '--pool', poolDir, '--weights', 'ja=0.5', ...sets, '--json');
    expect(j.code).toBe(2);
    expect(JSON.parse(j.stderr).error).toMatchObject({ code: 'BAD_POOL', retryable: false });
    const x = await optimer('export', '--pool', poolDir, '--weights', 'ja=0.5', '--out', join(tmp, 'flipped.onnx'));
    expect(x.code).toBe(2);
    expect(x.stderr).toContain(`shard ${shard} is corrupt`);
    // what a user who knows better can still ask for
    const unchecked = await optimer('eval', '--pool', poolDir, '--weights', 'ja=0.5', ...sets, '--no-verify');
    expect(unchecked.code).toBe(0);
  }, 90_000);

  it('reliability - eval of a merge whose score is not finite exits 1 naming the sets; --json still prints the report', async () => {
    const poolDir = join(tmp, 'pool-overflow');
    await buildFamilyPool(family, poolDir);
    const args = ['eval', '--pool', poolDir, '--weights', 'ja=1e30', '--set', `ja=${family.dev.ja}`, '--set', `zh=${family.dev.zh}`];
    const r = await optimer(...args);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/weighted mean nll NaN/);
    expect(r.stderr).toBe(
      "optimer: the nll is not finite for set 'ja' (NaN), set 'zh' (NaN): the merged model overflows or is broken (try smaller weights)\n",
    );
    const j = await optimer(...args, '--json');
    expect(j.code).toBe(1);
    const report = JSON.parse(j.stdout);
    expect(report.scores.map((s: { name: string }) => s.name)).toEqual(['ja', 'zh']);
    expect(JSON.parse(j.stderr).error).toMatchObject({ code: 'RUNTIME', retryable: false });
    expect(JSON.parse(j.stderr).error.message).toContain("set 'ja' (NaN)");
  }, 60_000);

  it('reliability - a pool with no known context length: a too-long sequence fails with a message naming its length and --context-length', async () => {
    const base = join(tmp, 'pos-base.onnx');
    const ja = join(tmp, 'pos-ja.onnx');
    await writePositionalModel(base, family.base, 8);
    await writePositionalModel(ja, family.checkpoints.ja!, 8);
    const poolDir = join(tmp, 'pool-pos');
    const manifest = await buildPool({ base, vectors: [{ name: 'ja', path: ja }], out: poolDir });
    expect(manifest.model.contextLength).toBeNull();
    const fits = join(tmp, 'fits.jsonl');
    const long = join(tmp, 'long.jsonl');
    await writeFile(fits, '{"input_ids": [1, 2, 3, 4, 5, 6, 7, 8]}\n');
    await writeFile(long, '{"input_ids": [1, 2, 3]}\n{"input_ids": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]}\n');
    const ok = await optimer('eval', '--pool', poolDir, '--weights', 'ja=0.5', '--set', `x=${fits}`);
    expect(ok.code).toBe(0);
    const r = await optimer('eval', '--pool', poolDir, '--weights', 'ja=0.5', '--set', `x=${long}`, '--json');
    expect(r.code).toBe(1);
    // one line: the error (ONNX Runtime prints nothing of its own)
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    const err = JSON.parse(r.stderr).error;
    expect(err).toMatchObject({ code: 'RUNTIME', retryable: true });
    expect(err.message).toMatch(/^ONNX Runtime failed on a batch of 2 sequences of up to 12 tokens: /);
    expect(err.message).toContain('if the model takes fewer than 12 tokens, a 12-token sequence is the cause');
    expect(err.message).toContain("'optimer pool build --context-length N'");
    // with the context length given at pool build, the line is refused when the set is read
    const checked = join(tmp, 'pool-pos-checked');
    await buildPool({ base, vectors: [{ name: 'ja', path: ja }], out: checked, contextLength: 8 });
    const c = await optimer('eval', '--pool', checked, '--weights', 'ja=0.5', '--set', `x=${long}`);
    expect(c.code).toBe(2);
    expect(c.stderr).toBe(`optimer: ${long}:2: 12 tokens exceed the model's context length of 8\n`);
  }, 60_000);
});
