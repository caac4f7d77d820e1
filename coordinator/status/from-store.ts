import { OptimerError } from '../../shared/index.js';
import type { StudyStore } from '../store/store.js';
import { listItem, type StudyListItem, type StudyStatus, studyStatus, studySummary } from './status.js';

/** A study's status read from a store no coordinator holds (`live: false`): every trial unless paged. */
export async function statusFromStore(store: StudyStore, name: string, page?: { offset: number; limit: number }): Promise<StudyStatus> {
  const study = await store.getStudy(name);
  if (!study) throw new OptimerError('NOT_FOUND', `no study '${name}' in ${store.path}`);
  const trials = await store.listJobs(name, 'TRIAL');
  const tests = await store.listJobs(name, 'TEST');
  return studyStatus(study, trials, tests, page ?? { offset: 0, limit: trials.length });
}

/** Every study of a store, as list lines. */
export async function listFromStore(store: StudyStore): Promise<StudyListItem[]> {
  const out: StudyListItem[] = [];
  for (const study of await store.listStudies()) {
    out.push(listItem(studySummary(study, await store.listJobs(study.name, 'TRIAL'), await store.listJobs(study.name, 'TEST'))));
  }
  return out;
}
