import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Level } from 'level';
import { OptimerError } from '../../shared/index.js';
import type { JobRecord, StudyRecord } from './records.js';
import type { StudyStore } from './store.js';

type Kind = JobRecord['kind'];

/** The record format this optimer reads and writes; bump it when a record changes shape. */
export const STORE_FORMAT_VERSION = 1;
const FORMAT_NAME = 'optimer-store';
const META_KEY = 'meta!format';
// fsync before the write resolves (the coordinator acts on what it has recorded)
const SYNC = { sync: true };

export interface OpenLevelStoreOptions {
  /** create the store where there is none (default); false: NOT_FOUND, and nothing is created */
  create?: boolean;
}

/**
 * Opens the LevelDB study store at `path`: keys are `study!<name>` and
 * `job!<study>!<kind>!<number, 9 digits>` so that a study's jobs list in number order, plus
 * `meta!format` with the record format version, checked at open so that a store written by
 * another optimer version is refused rather than misread or overwritten.
 */
export async function openLevelStore(path: string, opts: OpenLevelStoreOptions = {}): Promise<StudyStore> {
  const create = opts.create ?? true;
  // checked here: LevelDB creates the directory and its LOCK file even when told not to create
  if (!create && !(await isFile(join(path, 'CURRENT')))) {
    throw new OptimerError('NOT_FOUND', `${path}: no study store here (nothing has run with --store <dir>?)`);
  }
  const db = new Level<string, string>(path, { valueEncoding: 'utf8', createIfMissing: create });
  try {
    await db.open();
  } catch (e) {
    const cause = (e as { cause?: { message?: string } }).cause?.message ?? (e as Error).message;
    const busy = /lock/i.test(cause);
    throw new OptimerError(
      'STORE',
      busy ? `${path}: ${IN_USE} (a running coordinator?)` : `${path}: cannot open the study store: ${cause}`,
      { cause: e },
    );
  }
  try {
    await checkFormat(db, path, create);
  } catch (e) {
    await db.close();
    throw e;
  }
  return new LevelStudyStore(db, path);
}

const IN_USE = 'the study store is in use by another optimer process';

/** Whether opening a store failed because another process (a running coordinator) holds it. */
export function isStoreInUse(e: unknown): boolean {
  return e instanceof OptimerError && e.code === 'STORE' && e.message.includes(IN_USE);
}

async function isFile(p: string): Promise<boolean> {
  return (await stat(p).catch(() => undefined))?.isFile() ?? false;
}

/** Refuses a store this optimer cannot read; marks a new or pre-versioning store as version 1. */
async function checkFormat(db: Level<string, string>, path: string, create: boolean): Promise<void> {
  const raw = await db.get(META_KEY);
  if (raw === undefined) {
    // before format versions, a store held only study and job keys (in today's shape)
    let ours = 0;
    for await (const key of db.keys()) {
      if (!key.startsWith('study!') && !key.startsWith('job!')) {
        throw new OptimerError(
          'STORE',
          `${path}: not an optimer study store (key '${key}' is not one optimer writes); use a new --store directory`,
        );
      }
      ours++;
    }
    // an empty store opened for reading stays as it is
    if (ours > 0 || create) await db.put(META_KEY, JSON.stringify({ format: FORMAT_NAME, version: STORE_FORMAT_VERSION }), SYNC);
    return;
  }
  const meta = parseJson(raw) as { format?: unknown; version?: unknown } | undefined;
  const what = `this optimer reads format version ${STORE_FORMAT_VERSION}: open it with the optimer that wrote it, or use a new --store directory`;
  if (typeof meta !== 'object' || meta === null || meta.format !== FORMAT_NAME || !Number.isInteger(meta.version)) {
    throw new OptimerError('STORE', `${path}: the study store's ${META_KEY} record is not one optimer writes (${clip(raw)}); ${what}`);
  }
  if (meta.version !== STORE_FORMAT_VERSION) {
    throw new OptimerError('STORE', `${path}: the study store is format version ${meta.version}; ${what}`);
  }
}

class LevelStudyStore implements StudyStore {
  constructor(
    private readonly db: Level<string, string>,
    readonly path: string,
  ) {}

  async getStudy(name: string): Promise<StudyRecord | undefined> {
    const key = studyKey(name);
    const raw = await this.db.get(key);
    return raw === undefined ? undefined : this.study(key, raw);
  }

  async putStudy(s: StudyRecord): Promise<void> {
    await this.db.put(studyKey(s.name), JSON.stringify(s), SYNC);
  }

  async listStudies(): Promise<StudyRecord[]> {
    const out: StudyRecord[] = [];
    for await (const [k, v] of this.db.iterator({ gte: 'study!', lt: 'study!\xff' })) out.push(this.study(k, v));
    return out;
  }

  async getJob(study: string, kind: Kind, number: number): Promise<JobRecord | undefined> {
    const key = jobKey(study, kind, number);
    const raw = await this.db.get(key);
    return raw === undefined ? undefined : this.job(key, raw);
  }

  async putJob(study: string, job: JobRecord): Promise<void> {
    await this.db.put(jobKey(study, job.kind, job.number), JSON.stringify(job), SYNC);
  }

  async putJobs(study: string, jobs: readonly JobRecord[]): Promise<void> {
    if (jobs.length === 0) return;
    await this.db.batch(
      jobs.map((j) => ({ type: 'put' as const, key: jobKey(study, j.kind, j.number), value: JSON.stringify(j) })),
      SYNC,
    );
  }

  async listJobs(study: string, kind: Kind): Promise<JobRecord[]> {
    const prefix = `job!${study}!${kind}!`;
    const out: JobRecord[] = [];
    for await (const [k, v] of this.db.iterator({ gte: prefix, lt: `${prefix}\xff` })) out.push(this.job(k, v));
    return out;
  }

  async clearJobs(study: string, kind?: Kind): Promise<void> {
    const prefix = kind ? `job!${study}!${kind}!` : `job!${study}!`;
    const keys: string[] = [];
    for await (const k of this.db.keys({ gte: prefix, lt: `${prefix}\xff` })) keys.push(k);
    await this.db.batch(
      keys.map((key) => ({ type: 'del' as const, key })),
      SYNC,
    );
  }

  async close(): Promise<void> {
    await this.db.close();
  }

  // A minimal check of what comes back, so that a corrupt record is named rather than misread.
  private study(key: string, raw: string): StudyRecord {
    const v = parseJson(raw) as Partial<StudyRecord> | undefined;
    if (!isObject(v) || typeof v.name !== 'string') throw this.corrupt(key, raw, 'a study record');
    return v as StudyRecord;
  }

  private job(key: string, raw: string): JobRecord {
    const v = parseJson(raw) as Partial<JobRecord> | undefined;
    if (!isObject(v) || (v.kind !== 'TRIAL' && v.kind !== 'TEST') || !Number.isInteger(v.number)) {
      throw this.corrupt(key, raw, 'a trial or test record');
    }
    return v as JobRecord;
  }

  private corrupt(key: string, raw: string, what: string): OptimerError {
    return new OptimerError('STORE', `${this.path}: the value at key '${key}' is not ${what} (${clip(raw)}); the store is corrupt`);
  }
}

function parseJson(raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    return undefined;
  }
}

function isObject(v: unknown): v is object {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function clip(raw: string): string {
  return raw.length > 80 ? `${raw.slice(0, 80)}...` : raw;
}

function studyKey(name: string): string {
  return `study!${name}`;
}

function jobKey(study: string, kind: Kind, number: number): string {
  return `job!${study}!${kind}!${String(number).padStart(9, '0')}`;
}
