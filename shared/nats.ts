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
