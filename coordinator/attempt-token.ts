import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Proposal } from '../shared/index.js';

type AttemptFields = Pick<Proposal, 'study' | 'generation' | 'kind' | 'trial' | 'attempt' | 'created'>;

/**
 * The token of one attempt of a job: a MAC, under the study's secret, of what identifies the
 * attempt. The proposal carries it and its result echoes it; a result from a client that did not
 * pull the proposal (a forger on the results subject, a confused worker) cannot carry it.
 */
export function attemptToken(secret: string, a: AttemptFields): string {
  return createHmac('sha256', Buffer.from(secret, 'hex'))
    .update(`${a.study}\n${a.generation}\n${a.kind}\n${a.trial}\n${a.attempt}\n${a.created}`)
    .digest('hex')
    .slice(0, 32);
}

/** Whether a result carries the token of the attempt it claims to answer. */
export function holdsAttempt(secret: string, r: AttemptFields & { token?: string | undefined }): boolean {
  const got = Buffer.from(r.token ?? '');
  const want = Buffer.from(attemptToken(secret, r));
  return got.length === want.length && timingSafeEqual(got, want);
}
