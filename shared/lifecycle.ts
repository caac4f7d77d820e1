/**
 * Runs close steps in order, each one even when an earlier one failed (a failed drain must not
 * leave a server listening); the failures go to `onError`.
 */
export async function runAll(steps: readonly (() => unknown)[], onError: (e: unknown) => void = () => undefined): Promise<void> {
  for (const step of steps) {
    try {
      await step();
    } catch (e) {
      onError(e);
    }
  }
}

/**
 * Waits for `work` at most `ms`: a close step that can hang (a NATS drain while the server is
 * gone, a loop stuck in a request) must not keep a process from stopping. On timeout it rejects
 * with an error naming `what`; the work itself goes on in the background, its outcome ignored.
 */
export function withTimeout<T>(work: Promise<T> | T, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: no answer after ${ms} ms`)), ms);
    Promise.resolve(work).then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}

/**
 * Ends a NATS connection in bounded time: a drain (pending messages flushed, subscriptions
 * finished) for at most `drainMs`, then a close. A drain never closes a connection whose server
 * is gone (nats.js swallows the failed flush and keeps reconnecting forever, which keeps the
 * process alive), hence the close after it in every case.
 */
export async function closeNats(
  nc: { drain(): Promise<void>; close(): Promise<void>; isClosed(): boolean },
  drainMs = 2000,
): Promise<void> {
  if (nc.isClosed()) return;
  try {
    await withTimeout(nc.drain(), drainMs, 'NATS drain');
  } catch {
    // timed out, or already closing: the close below ends it either way
  }
  if (!nc.isClosed()) await withTimeout(nc.close(), drainMs, 'NATS close').catch(() => undefined);
}
