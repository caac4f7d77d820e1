import { AckPolicy, connect, type NatsConnection, RetentionPolicy } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Puller } from '../worker/puller.js';
import { useNatsServer } from './helpers/nats.js';

// The worker's pulls over one standing subscription, against a real nats-server.
const nats = useNatsServer();
let nc: NatsConnection;
beforeAll(async () => {
  nc = await connect({ servers: nats.url });
  const jsm = await nc.jetstreamManager();
  await jsm.streams.add({ name: 'PULLS', subjects: ['pulls.>'], retention: RetentionPolicy.Workqueue });
  await jsm.consumers.add('PULLS', { durable_name: 'work', ack_policy: AckPolicy.Explicit, filter_subject: 'pulls.>' });
});
afterAll(async () => {
  await nc?.close();
});

describe('puller', () => {
  it('puller - one message per pull, acked; nothing within the expiry is null; so is one from a missing consumer; a second pull at once is an error', async () => {
    const puller = new Puller(nc, undefined);
    const js = nc.jetstream();
    expect(await puller.next('PULLS', 'work', 200)).toBeNull();

    await js.publish('pulls.a', new TextEncoder().encode('one'));
    await js.publish('pulls.b', new TextEncoder().encode('two'));
    const first = (await puller.next('PULLS', 'work', 1000))!;
    expect(first.subject).toBe('pulls.a');
    expect(new TextDecoder().decode(first.data)).toBe('one');
    expect(first.seq).toBeGreaterThan(0);
    await first.ackAck();
    // the second is still there for the next pull (a pull takes one)
    const second = (await puller.next('PULLS', 'work', 1000))!;
    expect(second.subject).toBe('pulls.b');
    second.nak(); // back at once: the next pull gets it again
    const again = (await puller.next('PULLS', 'work', 1000))!;
    expect(again.subject).toBe('pulls.b');
    expect(again.info.redeliveryCount).toBe(2);
    await again.ackAck();

    // a consumer that does not exist gets no answer from the server: the pull comes back empty
    expect(await puller.next('PULLS', 'missing', 200)).toBeNull();
    const waiting = puller.next('PULLS', 'work', 200);
    await expect(puller.next('PULLS', 'work', 200)).rejects.toThrow(/already waiting/);
    expect(await waiting).toBeNull();
    puller.close();
  }, 30_000);
});
