import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, inject, it } from 'vitest';
import { useTempDir } from './helpers/temp.js';

const cli = inject('cli');
const dist = join(cli, '..', '..');
const tmp = useTempDir('layers');

/** The native addons a fresh Node process loads when it imports these compiled modules. */
async function addonsLoadedBy(modules: string[]): Promise<string[]> {
  const script = join(tmp, `probe-${modules.length}-${Date.now()}.mjs`);
  await writeFile(
    script,
    [
      'const load = process.dlopen;',
      'process.dlopen = (m, file, ...rest) => { process.stderr.write("addon " + file + "\\n"); return load(m, file, ...rest); };',
      ...modules.map((m) => `await import(${JSON.stringify(pathToFileURL(join(dist, m)).href)});`),
    ].join('\n'),
  );
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [script], { timeout: 60_000 }, (err, _out, stderr) => {
      if (err) reject(new Error(`${err.message}\n${stderr}`));
      else
        resolve(
          stderr
            .split('\n')
            .filter((l) => l.startsWith('addon '))
            .map((l) => l.slice(6)),
        );
    });
  });
}

describe('layers', () => {
  it('layers - the coordinator side and every CLI command module never load the ONNX Runtime binding; the worker side does', async () => {
    const coordinatorSide = await addonsLoadedBy([
      'coordinator/index.js',
      ...['demo', 'eval', 'init', 'pool', 'run', 'sample', 'study'].map((c) => `cli/commands/${c}.js`),
    ]);
    expect(coordinatorSide.filter((f) => /onnxruntime/i.test(f))).toEqual([]);
    // the probe can see the binding load: importing the worker side does load it
    const workerSide = await addonsLoadedBy(['worker/index.js']);
    expect(workerSide.some((f) => /onnxruntime/i.test(f))).toBe(true);
  });
});
