import type { Msg, NatsConnection, Subscription } from 'nats';
import { closeNats, connectNats, type Logger, OptimerError, subjects } from '../../shared/index.js';
import type { LiveStatus } from './live-status.js';
import { STATUS_FORMAT, STATUS_VERSION, type StudyListItem, type StudyStatus, statusRequestSchema } from './status.js';
/** What a reply leaves free of the server's max_payload (headers, the reply subject). */
const PAYLOAD_MARGIN = 4096;

export interface StatusServiceOptions {
  natsUrl: string;
  /** the study this coordinator runs, its record and mesh */
  status: LiveStatus;
  log: Logger;
}

/**
 * Answers status requests for the study a coordinator runs, over NATS request/reply, so that
 * `optimer study status` works from any machine that reaches NATS while the record (LevelDB,
 * single writer) stays locked by the coordinator. The replies are read from the record (the
 * coordinator writes it before acting, so it is the truth) plus the live worker pool.
 *
 * Payloads are JSON, not protobuf like the work messages: this is a read model for people and
 * tools (`nats req optimer.v1.status.study.NAME ''` is readable as it is, and it is the same
 * object `--json` prints and the dashboard reads), it changes shape more often than the work
 * protocol, and the zod schemas in status.ts validate it on the client side all the same.
 * A reply stays under the server's max_payload: trials come in pages.
 */
export class StatusService {
  private readonly subs: Subscription[] = [];
  private readonly served: Promise<void>[] = [];
  private closePromise: Promise<void> | undefined;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly o: StatusServiceOptions,
  ) {}

  static async start(o: StatusServiceOptions): Promise<StatusService> {
    const nc = await connectNats(o.natsUrl, `optimer-status-${o.status.study}`);
    const s = new StatusService(nc, o);
    s.serve(subjects.status(o.status.study), (m) => s.status(m));
    s.serve(subjects.statusList, () => s.list());
    await nc.flush(); // subscribed before anyone is told the study runs
    return s;
  }

  close(): Promise<void> {
    this.closePromise ??= (async () => {
      for (const sub of this.subs) sub.unsubscribe();
      await Promise.allSettled(this.served);
      await closeNats(this.nc);
    })();
    return this.closePromise;
  }

  private serve(subject: string, answer: (m: Msg) => Promise<unknown>): void {
    const sub = this.nc.subscribe(subject);
    this.subs.push(sub);
    this.served.push(
      (async () => {
        // one request at a time: each reads the record; a burst waits rather than piles up
        for await (const m of sub) {
          let reply: unknown;
          try {
            reply = await answer(m);
          } catch (e) {
            const err = e instanceof OptimerError ? e : new OptimerError('RUNTIME', (e as Error).message);
            if (!(e instanceof OptimerError)) this.o.log.warn({ err: err.message }, 'a status request failed');
            reply = { error: err.toJSON() };
          }
          try {
            m.respond(this.encode(reply));
          } catch (e) {
            this.o.log.debug({ err: (e as Error).message }, 'could not answer a status request');
          }
        }
      })(),
    );
  }

  private get maxBytes(): number {
    return (this.nc.info?.max_payload ?? 1024 * 1024) - PAYLOAD_MARGIN;
  }

  private encode(value: unknown): Uint8Array {
    const bytes = new TextEncoder().encode(JSON.stringify(value));
    if (bytes.length <= this.maxBytes) return bytes;
    return new TextEncoder().encode(
      JSON.stringify({ error: new OptimerError('RUNTIME', `the status reply is ${bytes.length} bytes, over NATS's max_payload`).toJSON() }),
    );
  }

  private async status(m: Msg): Promise<StudyStatus> {
    let body: unknown = {};
    const text = new TextDecoder().decode(m.data).trim();
    if (text !== '') {
      try {
        body = JSON.parse(text);
      } catch {
        throw new OptimerError('BAD_MESSAGE', `status request on ${m.subject}: not JSON`);
      }
    }
    const req = statusRequestSchema.safeParse(body);
    if (!req.success) throw new OptimerError('BAD_MESSAGE', `status request on ${m.subject}: ${req.error.issues[0]?.message ?? 'invalid'}`);
    // a page too large for one message is cut (its `next` says where to go on)
    let limit = req.data.limit;
    for (;;) {
      const s = await this.o.status.status({ offset: req.data.offset, limit });
      if (limit <= 1 || new TextEncoder().encode(JSON.stringify(s)).length <= this.maxBytes) return s;
      limit = Math.floor(limit / 2);
    }
  }

  private async list(): Promise<{ format: string; version: number; at: string; studies: StudyListItem[] }> {
    const studies = await this.o.status.list();
    return { format: STATUS_FORMAT, version: STATUS_VERSION, at: new Date().toISOString(), studies };
  }
}
