import { OptimerError } from '../../shared/index.js';
import type { JobRecord, StudyRecord } from './records.js';
import type { StudyStore } from './store.js';

type Kind = JobRecord['kind'];

/**
 * A study store in memory, for tests and runs that need no record afterwards. It keeps the
 * LevelDB store's semantics: copies in and out, studies in name order, jobs in number order,
 * and no use after close.
 */
export class MemoryStudyStore implements StudyStore {
  private readonly studies = new Map<string, StudyRecord>();
  private readonly jobs = new Map<string, Map<Kind, Map<number, JobRecord>>>();
  private closed = false;

  constructor(readonly path = '(memory)') {}

  async getStudy(name: string): Promise<StudyRecord | undefined> {
    this.check();
    return copy(this.studies.get(name));
  }

  async putStudy(study: StudyRecord): Promise<void> {
    this.check();
    this.studies.set(study.name, structuredClone(study));
  }

  async listStudies(): Promise<StudyRecord[]> {
    this.check();
    return [...this.studies.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, s]) => structuredClone(s));
  }

  async getJob(study: string, kind: Kind, number: number): Promise<JobRecord | undefined> {
    this.check();
    return copy(this.jobs.get(study)?.get(kind)?.get(number));
  }

  async putJob(study: string, job: JobRecord): Promise<void> {
    await this.putJobs(study, [job]);
  }

  async putJobs(study: string, jobs: readonly JobRecord[]): Promise<void> {
    this.check();
    const copies = jobs.map((j) => structuredClone(j)); // all copied before any is stored
    for (const j of copies) this.kindMap(study, j.kind).set(j.number, j);
  }

  async listJobs(study: string, kind: Kind): Promise<JobRecord[]> {
    this.check();
    const m = this.jobs.get(study)?.get(kind);
    if (!m) return [];
    return [...m.values()].sort((a, b) => a.number - b.number).map((j) => structuredClone(j));
  }

  async clearJobs(study: string, kind?: Kind): Promise<void> {
    this.check();
    if (kind) this.jobs.get(study)?.delete(kind);
    else this.jobs.delete(study);
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  private check(): void {
    if (this.closed) throw new OptimerError('STORE', `${this.path}: the study store is closed`);
  }

  private kindMap(study: string, kind: Kind): Map<number, JobRecord> {
    let byKind = this.jobs.get(study);
    if (!byKind) {
      byKind = new Map();
      this.jobs.set(study, byKind);
    }
    let m = byKind.get(kind);
    if (!m) {
      m = new Map();
      byKind.set(kind, m);
    }
    return m;
  }
}

function copy<T>(v: T | undefined): T | undefined {
  return v === undefined ? undefined : structuredClone(v);
}
