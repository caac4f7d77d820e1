import { OptimerError } from '../../shared/index.js';
import type { StudyStore } from '../store/store.js';
import type { TrackedWorker } from '../worker-tracker.js';
import { listItem, type StudyListItem, type StudyStatus, studyStatus, studySummary } from './status.js';

/** Studies of the store a list names besides the live one (a list must stay small). */
const MAX_LISTED_STUDIES = 200;

/**
 * The status of the study a coordinator runs, read from its record (written before the
 * coordinator acts, so it is the truth) plus the worker pool as the coordinator hears it now.
 * What the NATS status service and the dashboard answer with: one reader, two transports.
 */
export class LiveStatus {
  constructor(
    /** the study this coordinator runs */
    readonly study: string,
    private readonly store: StudyStore,
    private readonly workers: () => readonly TrackedWorker[],
  ) {}

  /** One page of the trials (default: all of them) with the summary, workers and tests. */
  async status(page?: { offset: number; limit: number }): Promise<StudyStatus> {
    const study = await this.store.getStudy(this.study);
    if (!study) throw new OptimerError('NOT_FOUND', `no study '${this.study}' in ${this.store.path}`);
    const trials = await this.store.listJobs(this.study, 'TRIAL');
    const tests = await this.store.listJobs(this.study, 'TEST');
    const live = { workers: this.workers(), nowMs: Date.now() };
    return studyStatus(study, trials, tests, page ?? { offset: 0, limit: trials.length }, live);
  }

  /** Every study of the store (the live one with its mesh and ETA). */
  async list(): Promise<StudyListItem[]> {
    const now = Date.now();
    const studies: StudyListItem[] = [];
    for (const study of (await this.store.listStudies()).slice(0, MAX_LISTED_STUDIES)) {
      const live = study.name === this.study ? { workers: this.workers(), nowMs: now } : undefined;
      const trials = await this.store.listJobs(study.name, 'TRIAL');
      const tests = await this.store.listJobs(study.name, 'TEST');
      studies.push(listItem(studySummary(study, trials, tests, live)));
    }
    return studies;
  }
}
