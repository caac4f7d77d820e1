/** Waits `ms`; resolves early (without throwing) when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

export interface BackoffOptions {
  /** first delay, ms */
  initialMs: number;
  /** no delay is longer than this, ms */
  maxMs: number;
  /** the delay is drawn from [d·(1 − jitter), d]: clients that failed together do not retry together */
  jitter?: number;
}

/** Exponential backoff with jitter: `next()` gives the next delay, `reset()` starts over. */
export class Backoff {
  private attempt = 0;
  constructor(private readonly o: BackoffOptions) {}

  next(): number {
    const d = Math.min(this.o.maxMs, this.o.initialMs * 2 ** this.attempt);
    this.attempt++;
    const j = this.o.jitter ?? 0.2;
    return d * (1 - j * Math.random());
  }

  reset(): void {
    this.attempt = 0;
  }
}

/**
 * Runs `fn` until it succeeds, at most `attempts` times, waiting a backoff between tries; stops
 * early (rethrowing the last error) when `signal` aborts or `retryable(e)` says no.
 */
export async function retry<T>(
  fn: () => Promise<T>,
  o: BackoffOptions & { attempts: number; signal?: AbortSignal; retryable?: (e: unknown) => boolean },
): Promise<T> {
  const backoff = new Backoff(o);
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (e) {
      if (i >= o.attempts || o.signal?.aborted || (o.retryable && !o.retryable(e))) throw e;
      await sleep(backoff.next(), o.signal);
    }
  }
}
