import type { StudyConfig } from '../study/config.js';

/** The coordinator's record of a study and its trials: what LevelDB holds, as JSON. */
export interface StudyRecord {
  name: string;
  config: StudyConfig;
  /** bumped by --fresh, so results of an earlier run of the same name are recognised as stale */
  generation: number;
  state: 'running' | 'complete' | 'failed';
  /**
   * Why the study stopped as failed: a failure that would repeat (the same error failing the
   * canary or a streak of trials). Kept after a rerun resumes it until the streak's trials are
   * issued again, so a coordinator killed in between issues them on its next start.
   */
  failure?: StudyFailure;
  vectors: string[];
  bounds: Record<string, [number, number]>;
  /**
   * Signs each attempt's token (hex; see `attemptToken`): a result is taken only with the token of
   * the proposal it answers. Absent from records made before tokens: added on the next start.
   */
  leaseSecret?: string;
  createdAt: string;
  updatedAt: string;
}

export interface StudyFailure {
  code: string;
  message: string;
  /** the failed trials of the streak: issued again, not counted against the budget, on resume */
  trials: number[];
  at: string;
}

export type TrialState = 'running' | 'complete' | 'failed';

export interface PhaseTimings {
  fetchMs: number;
  mergeMs: number;
  evalMs: number;
}

export interface SetScoreRecord {
  name: string;
  score: number;
  tokens: number;
}

export interface AttemptRecord {
  attempt: number;
  issuedAt: string;
  /** JetStream sequence of the proposal, to withdraw it when the attempt is superseded */
  seq?: number;
  worker?: string;
  /** when a worker said it took this attempt */
  startedAt?: string;
  finishedAt?: string;
  outcome?: 'complete' | 'failed' | 'error' | 'superseded';
  error?: { code: string; message: string; retryable: boolean };
  timings?: PhaseTimings;
}

/** A job is a trial (dev sets) or a test evaluation (test sets) of a labelled merge. */
export interface JobRecord {
  kind: 'TRIAL' | 'TEST';
  /** trial number; for tests, the index in the study's test list */
  number: number;
  /** 'base', 'only:<v>', 'average', 'tpe', 'random'; for tests 'best' or a baseline label */
  label: string;
  params: Record<string, number>;
  state: TrialState;
  attempt: number;
  attempts: AttemptRecord[];
  value?: number;
  scores?: SetScoreRecord[];
  worker?: string;
  provider?: string;
  timings?: PhaseTimings;
  error?: { code: string; message: string };
  createdAt: string;
  finishedAt?: string;
  /** earlier runs of this trial, failed in a streak that stopped the study before a resume */
  retried?: { attempts: AttemptRecord[]; error?: { code: string; message: string }; createdAt: string; finishedAt?: string }[];
}
