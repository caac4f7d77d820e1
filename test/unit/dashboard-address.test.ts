import { afterEach, describe, expect, it } from 'vitest';
import { parseDashboardAddress } from '../../cli/commands/dashboard.js';

describe('dashboard address', () => {
  afterEach(() => {
    delete process.env.OPTIMER_DASHBOARD_TOKEN;
  });

  it('dashboard - PORT, HOST:PORT and [IPv6]:PORT; loopback by default; the token from the environment; bad ones refused', () => {
    expect(parseDashboardAddress(true, '--dashboard')).toEqual({ host: '127.0.0.1', port: 8710 });
    expect(parseDashboardAddress('9000', '--dashboard')).toEqual({ host: '127.0.0.1', port: 9000 });
    expect(parseDashboardAddress('0.0.0.0:9000', '--dashboard')).toEqual({ host: '0.0.0.0', port: 9000 });
    expect(parseDashboardAddress('[::1]:9000', '--dashboard')).toEqual({ host: '::1', port: 9000 });
    process.env.OPTIMER_DASHBOARD_TOKEN = 's3cret';
    expect(parseDashboardAddress('9000', '--listen')).toEqual({ host: '127.0.0.1', port: 9000, token: 's3cret' });
    for (const bad of ['', 'host:', '70000', 'a b:80', 'http://x:80'])
      expect(() => parseDashboardAddress(bad, '--listen')).toThrow(/--listen '.*': expected PORT, HOST:PORT/);
  });
});
