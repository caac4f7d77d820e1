import { Level } from 'level';
import { OptimerError } from '../../shared/index.js';
import type { JobRecord, StudyRecord } from './records.js';

/**
 * The coordinator's LevelDB: one study record per name and one record per trial and per test
 * job, keyed so that a study's trials list in number order. Every change is written (and
 * fsynced) before the coordinator acts on it: after a crash, the record says where things stand.
 */
export class StudyStore {
  private constructor(
    private readonly db: Level<string, unknown>,
    readonly path: string,
  ) {}

  static async open(path: string): Promise<StudyStore> {
    const db = new Level<string, unknown>(path, { valueEncoding: 'json' });
    try {
      await db.open();
    } catch (e) {
      const cause = (e as { cause?: { message?: string } }).cause?.message ?? (e as Error).message;
      const busy = /lock/i.test(cause);
      throw new OptimerError(
        'STORE',
        busy
          ? `${path}: the study store is in use by another optimer process (a running coordinator?)`
          : `${path}: cannot open the study store: ${cause}`,
        { cause: e },
      );
    }
    return new StudyStore(db, path);
  }

  async getStudy(name: string): Promise<StudyRecord | undefined> {
    return (await this.db.get(studyKey(name))) as StudyRecord | undefined;
  }

  async putStudy(s: StudyRecord): Promise<void> {
    await this.db.put(studyKey(s.name), s, { sync: true } as never);
  }

  async listStudies(): Promise<StudyRecord[]> {
    const out: StudyRecord[] = [];
    for await (const v of this.db.values({ gte: 'study!', lt: 'study!\xff' })) out.push(v as StudyRecord);
    return out;
  }

  async getJob(study: string, kind: JobRecord['kind'], number: number): Promise<JobRecord | undefined> {
    return (await this.db.get(jobKey(study, kind, number))) as JobRecord | undefined;
  }

  async putJob(study: string, job: JobRecord): Promise<void> {
    await this.db.put(jobKey(study, job.kind, job.number), job, { sync: true } as never);
  }

  async listJobs(study: string, kind: JobRecord['kind']): Promise<JobRecord[]> {
    const prefix = `job!${study}!${kind}!`;
    const out: JobRecord[] = [];
    for await (const v of this.db.values({ gte: prefix, lt: `${prefix}\xff` })) out.push(v as JobRecord);
    return out;
  }

  /** Removes a study's trials and tests (--fresh), or only its tests (the budget grew). */
  async clearJobs(study: string, kind?: JobRecord['kind']): Promise<void> {
    const prefix = kind ? `job!${study}!${kind}!` : `job!${study}!`;
    const keys: string[] = [];
    for await (const k of this.db.keys({ gte: prefix, lt: `${prefix}\xff` })) keys.push(k);
    await this.db.batch(
      keys.map((key) => ({ type: 'del' as const, key })),
      { sync: true } as never,
    );
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}

function studyKey(name: string): string {
  return `study!${name}`;
}

function jobKey(study: string, kind: JobRecord['kind'], number: number): string {
  return `job!${study}!${kind}!${String(number).padStart(9, '0')}`;
}
