import type { StudyAnnouncement, WorkerCapabilities } from './wire.js';

/** What the operator limited a worker to (empty: any). */
export interface StudyLimits {
  studies: readonly string[];
  departments: readonly string[];
}

/**
 * Why this worker must not take a study's trials, or null when it may: the study's requirements
 * against what the worker is, then the operator's limits. Pure.
 */
export function whyNotServe(ann: StudyAnnouncement, caps: WorkerCapabilities, limits: StudyLimits): string | null {
  const req = ann.requirements;
  if (req?.provider && req.provider !== caps.provider)
    return `the study requires provider ${req.provider}; this worker has ${caps.provider}`;
  if (req?.minMemoryGb && caps.memoryGb < req.minMemoryGb)
    return `the study requires ${req.minMemoryGb} GB of memory; this worker has ${round(caps.memoryGb)} GB`;
  if (limits.studies.length > 0 && !limits.studies.includes(ann.study))
    return `this worker is limited to studies ${limits.studies.join(', ')}`;
  if (limits.departments.length > 0 && !limits.departments.includes(ann.department ?? ''))
    return `the study's department is ${ann.department ? `'${ann.department}'` : 'not set'}; this worker is limited to departments ${limits.departments.join(', ')}`;
  return null;
}

function round(gb: number): number {
  return Math.round(gb * 10) / 10;
}
