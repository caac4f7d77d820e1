import type { JobKind } from '../shared/index.js';

/** Which phase a study is in: its trials, the held-out tests of the best and baselines, or done. */
export type StudyPhase = 'trials' | 'tests' | 'complete' | 'failed';

/** Identifies one attempt of one job (a trial or a test evaluation) of a study. */
interface JobRef {
  study: string;
  kind: JobKind;
  /** the trial number (for tests, the index in the study's test list) */
  trial: number;
  attempt: number;
  label: string;
}

/**
 * What happens in a study, as the coordinator sees it: the one seam the CLI's progress display,
 * a dashboard or a chaos test subscribe to. Emitted after the change is in the record.
 */
export type StudyEvent =
  | ({ type: 'trial.created'; params: Record<string, number> } & JobRef)
  | ({ type: 'trial.started'; worker: string } & JobRef)
  | ({ type: 'trial.completed'; worker: string; value: number } & JobRef)
  | ({ type: 'trial.failed'; worker?: string; error: { code: string; message: string } } & JobRef)
  | ({
      type: 'trial.reissued';
      reason: 'error' | 'timeout' | 'resume';
      worker?: string;
      error?: { code: string; message: string };
    } & JobRef)
  | { type: 'worker.seen'; study: string; worker: string; provider: string }
  | { type: 'worker.lost'; study: string; worker: string; silentMs: number }
  | { type: 'phase'; study: string; phase: StudyPhase };

export type StudyEventListener = (e: StudyEvent) => void;

/** A synchronous fan-out; a listener that throws is reported to `onError`, never to the emitter. */
export class StudyEvents {
  private readonly listeners = new Set<StudyEventListener>();

  constructor(private readonly onError: (e: unknown, event: StudyEvent) => void = () => undefined) {}

  /** Adds a listener; returns the function that removes it. */
  subscribe(listener: StudyEventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(event: StudyEvent): void {
    for (const l of this.listeners) {
      try {
        l(event);
      } catch (e) {
        this.onError(e, event);
      }
    }
  }
}
