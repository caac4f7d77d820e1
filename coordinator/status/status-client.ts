import { type NatsConnection, RequestStrategy } from 'nats';
import type { z } from 'zod';
import { closeNats, connectNats, type ErrorCode, formatIssues, OptimerError, subjects } from '../../shared/index.js';
import { MAX_STATUS_PAGE, type StatusRequest, type StudyListItem, type StudyStatus, studyListSchema, studyStatusSchema } from './status.js';

/** How long a status request waits for the coordinator, ms. */
export const DEFAULT_STATUS_TIMEOUT_MS = 5000;
/** How long a list request waits for more coordinators after the last answer, ms. */
export const DEFAULT_LIST_QUIET_MS = 300;

/** Asks the coordinator running `study` (over NATS at `natsUrl`) for its status: one page of trials. */
export async function requestStudyStatus(
  natsUrl: string,
  study: string,
  req: StatusRequest = {},
  o: { timeoutMs?: number } = {},
): Promise<StudyStatus> {
  return withNats(natsUrl, (nc) => ask(nc, natsUrl, study, req, o.timeoutMs ?? DEFAULT_STATUS_TIMEOUT_MS));
}

/** The status with every trial: pages asked for one after the other on one connection. */
export async function requestFullStatus(natsUrl: string, study: string, o: { timeoutMs?: number } = {}): Promise<StudyStatus> {
  return withNats(natsUrl, async (nc) => {
    const timeoutMs = o.timeoutMs ?? DEFAULT_STATUS_TIMEOUT_MS;
    const first = await ask(nc, natsUrl, study, { offset: 0, limit: MAX_STATUS_PAGE }, timeoutMs);
    const items = [...first.trials.items];
    let next = first.trials.next;
    while (next !== null) {
      const page = await ask(nc, natsUrl, study, { offset: next, limit: MAX_STATUS_PAGE }, timeoutMs);
      items.push(...page.trials.items);
      // a page of nothing cannot make progress (the study was restarted fresh meanwhile)
      next = page.trials.items.length > 0 ? page.trials.next : null;
    }
    return { ...first, trials: { total: items.length, offset: 0, items, next: null } };
  });
}

/** Every running coordinator's studies (the live one and the others of its store), by study name. */
export async function requestStudyList(natsUrl: string, o: { timeoutMs?: number; quietMs?: number } = {}): Promise<StudyListItem[]> {
  return withNats(natsUrl, async (nc) => {
    const byName = new Map<string, StudyListItem>();
    const replies = await nc.requestMany(subjects.statusList, new Uint8Array(0), {
      strategy: RequestStrategy.JitterTimer,
      maxWait: o.timeoutMs ?? DEFAULT_STATUS_TIMEOUT_MS,
      jitter: o.quietMs ?? DEFAULT_LIST_QUIET_MS,
    });
    try {
      for await (const m of replies) {
        // another coordinator's bad reply must not hide the good ones
        let list: z.infer<typeof studyListSchema>;
        try {
          list = decode(m.data, studyListSchema, `the study list from ${m.subject}`);
        } catch {
          continue;
        }
        for (const s of list.studies) {
          const known = byName.get(s.study);
          // the coordinator running a study knows it best; a paused copy in another store, less
          if (!known || (s.live && !known.live)) byName.set(s.study, s);
        }
      }
    } catch (e) {
      // no coordinator at all answers: an empty list, not an error
      if ((e as { code?: string }).code !== '503') throw e;
    }
    return [...byName.values()].sort((a, b) => a.study.localeCompare(b.study));
  });
}

async function withNats<T>(natsUrl: string, fn: (nc: NatsConnection) => Promise<T>): Promise<T> {
  const nc = await connectNats(natsUrl, 'optimer-status-client');
  try {
    return await fn(nc);
  } finally {
    await closeNats(nc);
  }
}

async function ask(nc: NatsConnection, natsUrl: string, study: string, req: StatusRequest, timeoutMs: number): Promise<StudyStatus> {
  let data: Uint8Array;
  try {
    const m = await nc.request(subjects.status(study), new TextEncoder().encode(JSON.stringify(req)), { timeout: timeoutMs });
    data = m.data;
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === '503')
      throw new OptimerError('NOT_FOUND', `no coordinator runs study '${study}' on NATS at ${natsUrl} (is it running, on this NATS?)`, {
        cause: e,
      });
    throw new OptimerError('TRANSPORT', `study '${study}': no status from NATS at ${natsUrl}: ${(e as Error).message}`, {
      cause: e,
      retryable: true,
    });
  }
  return decode(data, studyStatusSchema, `the status of study '${study}'`);
}

/** A reply is JSON of the schema, or `{error}` from the coordinator (raised as that error). */
function decode<S extends z.ZodType>(data: Uint8Array, schema: S, where: string): z.infer<S> {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(data));
  } catch {
    throw new OptimerError('BAD_MESSAGE', `${where}: not JSON`);
  }
  const err = (json as { error?: { code?: unknown; message?: unknown; retryable?: unknown } } | null)?.error;
  if (err && typeof err.message === 'string') {
    throw new OptimerError(typeof err.code === 'string' ? (err.code as ErrorCode) : 'RUNTIME', err.message, {
      retryable: err.retryable === true,
    });
  }
  const r = schema.safeParse(json);
  if (!r.success) throw new OptimerError('BAD_MESSAGE', formatIssues(where, r.error));
  return r.data;
}
