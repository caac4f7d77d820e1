import { execFile } from 'node:child_process';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, inject, it, vi } from 'vitest';
import { buildPool, type BuildPoolOptions } from '../shared/pool/build.js';
import { HashThreads, runningHashThreads } from '../shared/pool/hash-threads.js';
import { failingHashThreadSource } from './helpers/hash-threads.js';
import { useTempDir } from './helpers/temp.js';

const family = inject('family');
const familyFp16 = inject('familyFp16');
const cli = inject('cli');
const tmp = useTempDir('pool-hash');
const run = promisify(execFile);

afterEach(() => {
  vi.restoreAllMocks();
  expect(runningHashThreads()).toBe(0);
});

/** Every file of a pool, by name: the shards (named by their sha256) and the manifest. */
async function poolFiles(out: string): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>([['manifest.json', await readFile(join(out, 'manifest.json'))]]);
  for (const f of await readdir(join(out, 'shards'))) files.set(f, await readFile(join(out, 'shards', f)));
  return files;
}

function options(f: typeof family, out: string, extra: Partial<BuildPoolOptions> = {}): BuildPoolOptions {
  return { base: f.base, vectors: Object.entries(f.checkpoints).map(([name, path]) => ({ name, path })), out, ...extra };
}

describe('pool build, hashing threads', () => {
  it('pool build - the same shards and manifest with hashes on threads or on the main thread', async () => {
    for (const [label, f] of [
      ['fp32', family],
      ['fp16', familyFp16],
    ] as const) {
      // small shards and pieces: tensors span shards, shards end inside pieces
      const small = { shardBytes: 10_000, pieceBytes: 3000 };
      const main = join(tmp, `${label}-main`);
      await buildPool(options(f, main, { ...small, hashThreads: 0 }));
      const want = await poolFiles(main);
      expect(want.size).toBeGreaterThan(10);
      for (const hashThreads of [1, 2, 3]) {
        const out = join(tmp, `${label}-threads-${hashThreads}`);
        await buildPool(options(f, out, { ...small, hashThreads }));
        // the manifest names no path that differs: the same bytes
        expect(await poolFiles(out), `${label}, ${hashThreads} threads`).toEqual(want);
      }
    }
  });

  it('pool build - a hashing thread that fails fails the build, with no manifest, no temporary shard and no thread left', async () => {
    const start = HashThreads.start.bind(HashThreads);
    const spy = vi.spyOn(HashThreads, 'start').mockImplementation((count) => start(count, failingHashThreadSource(3)));
    const out = join(tmp, 'failing');
    const err = await buildPool(options(family, out, { shardBytes: 10_000, hashThreads: 2 })).catch((e: unknown) => e);
    expect(spy).toHaveBeenCalledOnce();
    expect(err).toMatchObject({ code: 'RUNTIME' });
    expect((err as Error).message).toMatch(/^pool build: a hashing thread failed: injected hashing failure$/);
    await expect(readFile(join(out, 'manifest.json'))).rejects.toThrow();
    expect((await readdir(join(out, 'shards'))).filter((f) => f.startsWith('.tmp-'))).toEqual([]);
    expect(runningHashThreads()).toBe(0);
  });

  it('pool build - the CLI exits on a failed build with its hashing threads started', async () => {
    const junk = join(tmp, 'junk.onnx');
    await writeFile(junk, 'this is not a model');
    const args = [cli, 'pool', 'build', '--base', family.base, '--vector', `ok=${family.checkpoints.ja!}`, '--vector', `junk=${junk}`];
    const err = await run(process.execPath, [...args, '--out', join(tmp, 'cli-junk')]).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: expect.any(Number) });
    expect((err as { code: number }).code).not.toBe(0);
    expect((err as { stderr: string }).stderr).toMatch(/junk\.onnx/);
  });

  it('pool build - idle hashing threads do not keep a process alive that forgot to stop them', async () => {
    const module = join(cli, '..', '..', 'shared', 'pool', 'hash-threads.js');
    const code = `import { HashThreads } from ${JSON.stringify(module)};
const h = await HashThreads.start(2);
if (!h) throw new Error('no hashing threads');
const s = h.shard(4);
await s.update(new Uint8Array(10));
console.log((await s.digest()).pieces.length);`;
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', code]);
    expect(stdout.trim()).toBe('3');
  });
});
