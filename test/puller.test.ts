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
  // a long lease: a proposal seen again within the test was handed back, not left to expire
  await jsm.streams.add({ name: 'OTHER', subjects: ['other.>'], retention: RetentionPolicy.Workqueue });
  await jsm.consumers.add('OTHER', { durable_name: 'o', ack_policy: AckPolicy.Explicit, filter_subject: 'other.>', ack_wait: 60e9 });
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

  /** A pull the puller did not make (as one given up before a reconnect and still live at the server), answered on its subscription. */
  function strayPull(puller: Puller, stream: string, consumer: string): void {
    const inbox = (puller as unknown as { inbox: string }).inbox;
    nc.publish(`$JS.API.CONSUMER.MSG.NEXT.${stream}.${consumer}`, JSON.stringify({ batch: 1, expires: 5e9 }), { reply: `${inbox}.999` });
  }

  it('puller - a proposal of a pull nobody waits for, or of another consumer than the waiting pull’s, is handed back at once; close ends a waiting pull', async () => {
    const puller = new Puller(nc, undefined);
    const js = nc.jetstream();
    // nobody waits: handed back (not held until the minute-long lease)
    strayPull(puller, 'OTHER', 'o');
    await nc.flush();
    await js.publish('other.a', new TextEncoder().encode('stray'));
    await new Promise((r) => setTimeout(r, 200)); // its delivery may follow the PubAck: no pull of `o` waits for it yet
    const back = (await puller.next('OTHER', 'o', 2000))!;
    expect(back.subject).toBe('other.a');
    expect(back.info.redeliveryCount).toBe(2);
    await back.ackAck();

    // another consumer's proposal comes while a pull of `work` waits: that pull does not take it
    strayPull(puller, 'OTHER', 'o');
    await nc.flush();
    const waiting = puller.next('PULLS', 'work', 3000);
    await js.publish('other.b', new TextEncoder().encode('not yours'));
    await new Promise((r) => setTimeout(r, 200));
    await js.publish('pulls.c', new TextEncoder().encode('yours'));
    const mine = (await waiting)!;
    expect(mine.subject).toBe('pulls.c');
    await mine.ackAck();
    const other = (await puller.next('OTHER', 'o', 2000))!;
    expect(other.subject).toBe('other.b');
    expect(other.info.redeliveryCount).toBe(2);
    await other.ackAck();

    // close: the waiting pull ends at once, a later one is refused
    const pending = puller.next('PULLS', 'work', 5000);
    const t0 = Date.now();
    await puller.close();
    expect(await pending).toBeNull();
    expect(Date.now() - t0).toBeLessThan(1000);
    await expect(puller.next('PULLS', 'work', 200)).rejects.toThrow(/closed/);
  }, 30_000);
});
