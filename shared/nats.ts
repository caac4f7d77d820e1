import { connect, type JetStreamClient, type NatsConnection, type PubAck } from 'nats';
import { OptimerError } from './errors.js';
import { retry } from './retry.js';

/** Connects to NATS, reconnecting forever after a loss; a first failure is a TRANSPORT error. */
export async function connectNats(url: string, name: string): Promise<NatsConnection> {
  try {
    return await connect({ servers: url, name, maxReconnectAttempts: -1, reconnectTimeWait: 250 });
  } catch (e) {
    throw new OptimerError('TRANSPORT', `cannot connect to NATS at ${url}: ${(e as Error).message}`, { cause: e, retryable: true });
  }
}

/**
 * Whether a NATS error says that nothing answers the JetStream API: nats.js throws a bare
 * `503` (no responders) from `jetstreamManager()`, `views.kv()`, `consumers.get()` and a
 * JetStream publish when the server runs without JetStream (or the account has none).
 */
export function isNoJetStream(e: unknown): boolean {
  const err = e as { code?: unknown; message?: unknown } | null;
  return err?.code === '503' || (typeof err?.message === 'string' && /jetstream not enabled/i.test(err.message));
}

/** What to tell a user whose NATS server has no JetStream: what is wrong and how to enable it. */
export function noJetStreamMessage(url: string): string {
  return (
    `the NATS server at ${url} has no JetStream (nothing answers its JetStream API); optimer needs it: ` +
    "start the server with 'nats-server -js' (and '-sd DIR' for its store), or add 'jetstream {}' to its config"
  );
}

/** A SETUP error for a server without JetStream, when `e` says so; `e` itself otherwise. */
export function explainNoJetStream(e: unknown, url: string): unknown {
  return isNoJetStream(e) ? new OptimerError('SETUP', noJetStreamMessage(url), { cause: e }) : e;
}

/**
 * A JetStream publish that survives a NATS restart (a publish is not buffered while the server
 * is down: it times out), de-duplicated by `msgID` so a retry never stores a message twice.
 */
export function publishWithRetry(
  js: JetStreamClient,
  subject: string,
  data: Uint8Array,
  o: { msgID: string; signal?: AbortSignal; attempts?: number },
): Promise<PubAck> {
  return retry(() => js.publish(subject, data, { msgID: o.msgID, timeout: 5000 }), {
    attempts: o.attempts ?? 20,
    initialMs: 100,
    maxMs: 2000,
    ...(o.signal ? { signal: o.signal } : {}),
  });
}
