import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { FamilyFiles } from '../../shared/family/build.js';
import { buildFamilyPool } from '../helpers/family.js';
import { writeStudyConfig } from '../helpers/study.js';

/**
 * A study over the family with dev sets repeated `repeat` times, so that one evaluation lasts
 * long enough (about 0.1 s per repeat on these machines) to kill or stop a worker in the middle
 * of it; no test sets, no canary, no streak: the faults, not fail-fast, are under test.
 */
export async function chaosStudy(
  f: FamilyFiles,
  dir: string,
  name: string,
  o: { trials: number; repeat?: number; lease?: Record<string, number> },
): Promise<string> {
  const poolDir = join(dir, `pool-${name}`);
  await buildFamilyPool(f, poolDir);
  const sets = [];
  for (const [set, path] of Object.entries(f.dev)) {
    const lines = await readFile(path, 'utf8');
    const big = join(dir, `${name}-${set}.jsonl`);
    await writeFile(big, lines.repeat(o.repeat ?? 1));
    sets.push({ name: set, path: big });
  }
  return writeStudyConfig(join(dir, `${name}.json`), f, poolDir, {
    name,
    trials: o.trials,
    objective: { sets },
    failFast: { canary: 0, streak: 0 },
    lease: { ackWaitSeconds: 2, trialTimeoutSeconds: 30, maxAttempts: 3, ...o.lease },
  });
}
