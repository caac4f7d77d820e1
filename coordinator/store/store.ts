import type { JobRecord, StudyRecord } from './records.js';

/**
 * The coordinator's record: one study record per name and one record per trial and per test
 * job. The coordinator acts only on what a write has made durable, so every write resolves
 * after the record is on disk (for stores that have one): after a crash, the record says where
 * things stand. Records go in and come out as copies: a caller changing one changes nothing here.
 */
export interface StudyStore {
  /** where the records live, for messages */
  readonly path: string;

  getStudy(name: string): Promise<StudyRecord | undefined>;
  putStudy(study: StudyRecord): Promise<void>;
  /** every study, in name order */
  listStudies(): Promise<StudyRecord[]>;

  getJob(study: string, kind: JobRecord['kind'], number: number): Promise<JobRecord | undefined>;
  putJob(study: string, job: JobRecord): Promise<void>;
  /** several jobs in one atomic write: after a crash, all of them are recorded or none */
  putJobs(study: string, jobs: readonly JobRecord[]): Promise<void>;
  /** a study's jobs of one kind, in number order */
  listJobs(study: string, kind: JobRecord['kind']): Promise<JobRecord[]>;
  /** removes a study's trials and tests (--fresh), or only the jobs of one kind (the budget grew) */
  clearJobs(study: string, kind?: JobRecord['kind']): Promise<void>;

  close(): Promise<void>;
}
