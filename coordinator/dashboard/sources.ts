import type { StudyEvents } from '../events.js';
import { statusFromStore } from '../status/from-store.js';
import type { LiveStatus } from '../status/live-status.js';
import type { StudyStore } from '../store/store.js';
import type { DashboardSource } from './server.js';

/**
 * What a running coordinator shows: its study live (record + mesh), the store's other studies
 * as recorded, and a change notice on each of its study's events.
 */
export function coordinatorSource(live: LiveStatus, events: StudyEvents, store: StudyStore): DashboardSource {
  return {
    list: () => live.list(),
    status: (study) => (study === live.study ? live.status() : statusFromStore(store, study)),
    subscribe: (onChange) => events.subscribe((e) => onChange(e.study, e.type)),
  };
}
