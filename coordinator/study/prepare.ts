import { randomBytes } from 'node:crypto';
import { type Logger, OptimerError } from '../../shared/index.js';
import type { StudyRecord } from '../store/records.js';
import type { StudyStore } from '../store/store.js';
import type { StudyConfig } from './config.js';

/** Fields a rerun may change: the budget (the study grows), the lease (a mesh setting), when to stop on failures. */
// how the pool serves a study may change between runs; what it searches may not
const CHANGEABLE: (keyof StudyConfig)[] = ['trials', 'lease', 'failFast', 'requirements', 'priority', 'department'];

/**
 * Loads or creates the study record. --fresh starts a new generation with no trials; a rerun
 * with a larger budget reopens a complete study (its tests run again, the best may change); a
 * rerun of a failed study resumes it; any other change of the config is refused, naming the field.
 */
export async function prepareStudy(
  store: StudyStore,
  c: StudyConfig,
  o: { fresh: boolean; vectors: string[]; bounds: Record<string, [number, number]>; log: Logger },
): Promise<StudyRecord> {
  const now = new Date().toISOString();
  const old = await store.getStudy(c.name);
  // kept across reruns: proposals issued before a restart are answered after it
  const leaseSecret = old?.leaseSecret ?? randomBytes(32).toString('hex');
  if (!old || o.fresh) {
    if (old) {
      o.log.info('--fresh: forgetting the earlier trials');
      await store.clearJobs(c.name);
    }
    const study: StudyRecord = {
      name: c.name,
      config: c,
      generation: (old?.generation ?? 0) + 1,
      state: 'running',
      vectors: o.vectors,
      bounds: o.bounds,
      leaseSecret,
      createdAt: now,
      updatedAt: now,
    };
    await store.putStudy(study);
    return study;
  }
  const changed = firstDifference(withoutKeys(old.config, CHANGEABLE), withoutKeys(c, CHANGEABLE));
  if (changed) {
    throw new OptimerError(
      'BAD_CONFIG',
      `study '${c.name}' exists with a different ${changed}; run with --fresh to start it over, or give the study another name`,
    );
  }
  const grew = c.trials > old.config.trials;
  if (grew) await store.clearJobs(c.name, 'TEST'); // the best may change: test again at the end
  // a rerun resumes a failed study (the coordinator runs its streak's trials again); it keeps
  // `failure` until those are issued
  const state = grew || old.state !== 'complete' ? 'running' : 'complete';
  if (old.state === 'failed') o.log.info({ code: old.failure?.code }, 'resuming a study that stopped as failed');
  const study: StudyRecord = { ...old, config: c, state, leaseSecret, updatedAt: now };
  await store.putStudy(study);
  return study;
}

function withoutKeys<T extends object>(o: T, keys: readonly string[]): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([k]) => !keys.includes(k)));
}

/** The dotted path of the first field that differs between two JSON values, if any. */
function firstDifference(a: unknown, b: unknown, path = ''): string | undefined {
  if (JSON.stringify(a) === JSON.stringify(b)) return undefined;
  if (a && b && typeof a === 'object' && typeof b === 'object' && !Array.isArray(a) && !Array.isArray(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    for (const k of keys) {
      const d = firstDifference((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], path ? `${path}.${k}` : k);
      if (d) return d;
    }
  }
  return path || 'config';
}
