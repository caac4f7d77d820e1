/**
 * One error class for everything optimer refuses or fails at. `code` is stable (scripts and the
 * wire protocol match on it); `retryable` says whether trying again can help (a transport
 * hiccup) or not (bad input). Messages say what was wrong and where.
 */
export type ErrorCode =
  | 'BAD_ARGUMENT' // a CLI flag or API argument
  | 'BAD_ONNX' // an ONNX file that cannot be read or is not what optimer can use
  | 'POOL_MISMATCH' // checkpoints that cannot share a pool
  | 'BAD_POOL' // a pool directory that is missing, corrupt or tampered with
  | 'BAD_EVAL_SET' // an evaluation JSONL file
  | 'BAD_CONFIG' // a study config file
  | 'BAD_MESSAGE' // a NATS message or gRPC request that does not decode or validate
  | 'NOT_FOUND' // a study, trial or blob that does not exist
  | 'STORE' // the coordinator's record (LevelDB)
  | 'SETUP' // something to install or start (nats-server, ports)
  | 'TRANSPORT' // NATS or gRPC failed; usually worth retrying
  | 'STUDY_FAILED' // a study stopped on a failure that repeats (the canary or a streak of trials)
  | 'CACHE_TOO_SMALL' // a worker's cache limit is below what a study needs
  | 'RUNTIME'; // ONNX Runtime or I/O failed

export class OptimerError extends Error {
  override readonly name = 'OptimerError';
  readonly code: ErrorCode;
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; retryable?: boolean } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable ?? false;
  }

  toJSON(): { code: ErrorCode; message: string; retryable: boolean } {
    return { code: this.code, message: this.message, retryable: this.retryable };
  }
}

export function isOptimerError(e: unknown): e is OptimerError {
  return e instanceof OptimerError;
}
