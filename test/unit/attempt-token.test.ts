import { describe, expect, it } from 'vitest';
import { attemptToken, holdsAttempt } from '../../coordinator/attempt-token.js';

const secret = 'ab'.repeat(32);
const attempt = { study: 's', generation: 1, kind: 'TRIAL' as const, trial: 3, attempt: 1, created: 1_700_000_000_000 };

describe('attempt tokens', () => {
  it('attempt token - a result holds its attempt only with the token of that very proposal', () => {
    const token = attemptToken(secret, attempt);
    expect(token).toMatch(/^[0-9a-f]{32}$/);
    expect(holdsAttempt(secret, { ...attempt, token })).toBe(true);
    // no token, another attempt's, a made-up one, the same fields under another study's secret
    expect(holdsAttempt(secret, attempt)).toBe(false);
    expect(holdsAttempt(secret, { ...attempt, token: '' })).toBe(false);
    expect(holdsAttempt(secret, { ...attempt, token: token.toUpperCase() })).toBe(false);
    expect(holdsAttempt(secret, { ...attempt, token: `${token}0` })).toBe(false);
    expect(holdsAttempt('cd'.repeat(32), { ...attempt, token })).toBe(false);
    for (const change of [{ trial: 4 }, { attempt: 2 }, { generation: 2 }, { created: 0 }, { kind: 'TEST' as const }, { study: 't' }])
      expect([change, holdsAttempt(secret, { ...attempt, ...change, token })]).toEqual([change, false]);
  });
});
