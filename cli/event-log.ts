import type { StudyEvent } from '../coordinator/index.js';
import type { Logger } from '../shared/index.js';

/** The study events worth a log line: failures and reissues as warnings, the mesh and phases as info. */
export function logStudyEvent(log: Logger, e: StudyEvent): void {
  switch (e.type) {
    case 'trial.failed':
      log.warn(
        { kind: e.kind, trial: e.trial, attempt: e.attempt, worker: e.worker, code: e.error.code, err: e.error.message },
        'trial failed',
      );
      return;
    case 'trial.reissued':
      // a resume re-running a failed study's trials is expected; a reissue on an error is not
      log[e.reason === 'resume' ? 'info' : 'warn'](
        { kind: e.kind, trial: e.trial, attempt: e.attempt, reason: e.reason, worker: e.worker, err: e.error?.message },
        'issuing the trial again',
      );
      return;
    case 'worker.seen':
      log.info({ worker: e.worker, provider: e.provider || undefined }, 'worker joined');
      return;
    case 'worker.lost':
      log.info({ worker: e.worker, silentMs: e.silentMs }, 'worker lost');
      return;
    case 'phase':
      log.info({ phase: e.phase }, e.phase === 'complete' ? 'study complete' : `study phase: ${e.phase}`);
      return;
    default:
      log.debug({ event: e }, e.type);
  }
}
