import { createInbox, type JsMsg, type Msg, type NatsConnection, NatsError, type Subscription } from 'nats';
import { toJsMsg } from 'nats/lib/jetstream/jsmsg.js';

/** How much longer than the request's own expiry a pull waits for the server's word (lost on a reconnect). */
const GRACE_MS = 1000;

interface Waiting {
  reply: string;
  stream: string;
  consumer: string;
  resolve: (m: JsMsg | null) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * Pulls one proposal at a time from a work consumer over one standing subscription. The client's
 * `consumer.next()` makes a subscription (and its monitors and iterators) per pull and drops it
 * after: per trial a SUB and an UNSUB on the worker's socket and in nats-server's interest table.
 *
 * Each pull asks for one message (`batch: 1`) with a reply subject of its own, so the server's
 * word on a pull (408: expired, 409, 503: no such consumer) is matched to it. A proposal reaches
 * the subscription under its own subject, not the pull's: it is matched by the consumer its ack
 * subject names. One that comes while no pull of that consumer waits (the answer to a pull given
 * up after a reconnect, or one in flight when the puller closed) is handed back at once, never held.
 */
export class Puller {
  private readonly inbox: string;
  private readonly sub: Subscription;
  private seq = 0;
  private waiting: Waiting | undefined;
  private closed = false;
  /** why the subscription was closed under the puller (a permissions error): no pull can be made any more */
  failure: NatsError | undefined;

  constructor(
    private readonly nc: NatsConnection,
    inboxPrefix: string | undefined,
    private readonly apiPrefix = '$JS.API',
  ) {
    this.inbox = createInbox(inboxPrefix);
    this.sub = nc.subscribe(`${this.inbox}.*`, { callback: (err, m) => this.onMessage(err, m) });
  }

  /** The next message of `stream`'s consumer `consumer`, or null when none came within `expiresMs`. One pull at a time. */
  next(stream: string, consumer: string, expiresMs: number): Promise<JsMsg | null> {
    if (this.closed || this.failure) return Promise.reject(this.failure ?? new Error('the puller is closed'));
    if (this.waiting) return Promise.reject(new Error('a pull is already waiting'));
    const reply = `${this.inbox}.${++this.seq}`;
    return new Promise<JsMsg | null>((resolve, reject) => {
      const timer = setTimeout(() => this.settle(reply, null), expiresMs + GRACE_MS);
      this.waiting = { reply, stream, consumer, resolve, reject, timer };
      try {
        this.nc.publish(
          `${this.apiPrefix}.CONSUMER.MSG.NEXT.${stream}.${consumer}`,
          JSON.stringify({ batch: 1, expires: expiresMs * 1e6 }),
          {
            reply,
          },
        );
      } catch (e) {
        this.settle(reply, e as Error);
      }
    });
  }

  /**
   * Ends the waiting pull (null) and drains the subscription: a proposal the server sent before
   * it saw the unsubscribe is still handed back (nak'ed) rather than left to its lease.
   */
  async close(): Promise<void> {
    this.closed = true;
    if (this.waiting) this.settle(this.waiting.reply, null);
    if (!this.sub.isClosed()) await this.sub.drain().catch(() => undefined);
  }

  private onMessage(err: NatsError | null, m: Msg): void {
    if (err) {
      // the subscription is closed with it (a permissions error): every later pull fails at once
      this.failure ??= err;
      if (this.waiting) this.settle(this.waiting.reply, err);
      return;
    }
    if (m.subject.startsWith(this.inbox)) {
      // the server's word on a pull: only the waiting one's matters
      if (m.subject !== this.waiting?.reply) return;
      const code = m.headers?.code ?? 0;
      const description = (m.headers?.description ?? '').toLowerCase();
      if (code === 100) return; // a heartbeat (none asked for)
      if (code === 503)
        this.settle(m.subject, new NatsError('no responders', '503')); // no such consumer (any more)
      else if (code === 400 || (code === 409 && description.includes('deleted')))
        this.settle(m.subject, new NatsError(description || 'bad request', String(code)));
      else this.settle(m.subject, null); // 404, 408: nothing came; other 409s: asked again next turn
      return;
    }
    const msg = toJsMsg(m);
    const w = this.waiting;
    let ofWaiting = false;
    try {
      ofWaiting = w !== undefined && msg.info.stream === w.stream && msg.info.consumer === w.consumer;
    } catch {
      // no JetStream ack subject: not a proposal of any pull
    }
    if (!ofWaiting || !w) {
      // nobody waits for it (an earlier pull's, maybe another study's): back to the queue now, not after the lease
      if (m.reply) msg.nak();
      return;
    }
    this.settle(w.reply, msg);
  }

  private settle(reply: string, outcome: JsMsg | Error | null): void {
    const w = this.waiting;
    if (w?.reply !== reply) {
      if (outcome && !(outcome instanceof Error)) outcome.nak();
      return;
    }
    this.waiting = undefined;
    clearTimeout(w.timer);
    if (outcome instanceof Error) w.reject(outcome);
    else w.resolve(outcome);
  }
}
