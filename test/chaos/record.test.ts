import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, inject, it } from 'vitest';
import { openLevelStore } from '../../coordinator/store/level-store.js';
import { alive } from '../helpers/chaos.js';
import { exited } from '../helpers/study.js';
import { useTempDir } from '../helpers/temp.js';
import { waitFor } from '../helpers/wait.js';

const cli = inject('cli');
const tmp = useTempDir('chaos-record');
const BATCH = 25;

/**
 * A process that records as the coordinator does (the compiled LevelDB store: a batch of job
 * records, then the study record, each synced), as fast as it can, saying after each batch how
 * many jobs it has recorded; started again, it goes on from what the store holds.
 */
async function writerScript(): Promise<string> {
  const store = pathToFileURL(join(dirname(dirname(cli)), 'coordinator', 'store', 'level-store.js')).href;
  const path = join(tmp, 'writer.mjs');
  await writeFile(
    path,
    `import { openLevelStore } from ${JSON.stringify(store)};
const store = await openLevelStore(process.argv[2]);
const now = () => new Date().toISOString();
const study = { name: 'kill', config: {}, generation: 1, state: 'running', vectors: ['a'], bounds: { a: [0, 1] }, createdAt: now(), updatedAt: now() };
if (!(await store.getStudy('kill'))) await store.putStudy(study);
let n = (await store.listJobs('kill', 'TRIAL')).length;
process.stdout.write('start ' + n + '\\n');
const pad = 'x'.repeat(4000);
for (;;) {
  const jobs = Array.from({ length: ${BATCH} }, (_, i) => ({
    kind: 'TRIAL', number: n + i, label: 'tpe', params: { a: Math.random() }, state: 'complete', attempt: 1,
    attempts: [{ attempt: 1, issuedAt: now(), worker: pad }], value: Math.random(), createdAt: now(), finishedAt: now(),
  }));
  await store.putJobs('kill', jobs);
  await store.putStudy({ ...study, updatedAt: now() });
  n += ${BATCH};
  process.stdout.write('recorded ' + n + '\\n');
}
`,
  );
  return path;
}

describe('chaos - the record', () => {
  it('chaos - a process SIGKILLed in the middle of writing its record, five times over: the record reopens clean, every acknowledged write is there, an interrupted batch is whole or absent', async () => {
    const script = await writerScript();
    const db = join(tmp, 'db');
    let before = 0;
    for (let round = 0; round < 5; round++) {
      const child = spawn(process.execPath, [script, db], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
      // it reopened what the last kill left, and is writing again
      await waitFor(
        () => (out.match(/^recorded /gm)?.length ?? 0) >= 2 || child.exitCode !== null,
        30_000,
        `the writer recording (round ${round})`,
      );
      expect(child.exitCode, err).toBeNull();
      expect(out).toMatch(new RegExp(`^start ${before}$`, 'm'));
      await new Promise((r) => setTimeout(r, 20 + ((round * 37) % 90))); // somewhere in a write
      child.kill('SIGKILL');
      await exited(child, 10_000);
      expect(alive(child.pid!)).toBe(false);
      const acked = Math.max(...[...out.matchAll(/^recorded (\d+)$/gm)].map((m) => Number(m[1])));
      for (let open = 0; open < 2; open++) {
        const store = await openLevelStore(db, { create: false });
        try {
          expect((await store.getStudy('kill'))?.state).toBe('running');
          const jobs = await store.listJobs('kill', 'TRIAL'); // a corrupt record would throw, naming its key
          const n = jobs.length;
          expect(jobs.map((j) => j.number)).toEqual(Array.from({ length: n }, (_, i) => i));
          expect(n % BATCH).toBe(0);
          expect(n).toBeGreaterThanOrEqual(acked);
          expect(n).toBeLessThanOrEqual(acked + BATCH);
          expect(jobs.every((j) => j.state === 'complete' && Number.isFinite(j.value))).toBe(true);
          before = n;
        } finally {
          await store.close();
        }
      }
    }
    expect(before).toBeGreaterThan(5 * BATCH);
  }, 120_000);
});
