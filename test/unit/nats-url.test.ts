import { describe, expect, it } from 'vitest';
import { configureNats, natsConnectOptions, redactNatsUrl, splitNatsUrls } from '../../shared/nats.js';

describe('nats urls - one or a cluster', () => {
  it('nats urls - a comma-separated --nats gives nats.js every server, not one string it would cut to the last URL', () => {
    configureNats({});
    const o = natsConnectOptions('nats://10.0.0.1:4222, nats://10.0.0.2:4222,nats://10.0.0.3:4223', 'test');
    expect(o.servers).toEqual(['nats://10.0.0.1:4222', 'nats://10.0.0.2:4222', 'nats://10.0.0.3:4223']);
    expect(o.tls).toBeUndefined();
    expect(natsConnectOptions('nats://127.0.0.1:4222', 'test').servers).toBe('nats://127.0.0.1:4222');
  });

  it('nats urls - credentials in one URL apply to all, a tls:// URL turns TLS on, passwords are masked in each', () => {
    configureNats({});
    const o = natsConnectOptions('tls://worker:s%40cret@a:4222,tls://b:4222', 'test');
    expect(o).toMatchObject({ servers: ['nats://a:4222', 'nats://b:4222'], user: 'worker', pass: 's@cret', tls: {} });
    expect(redactNatsUrl('nats://u:p1@a:4222,nats://v:p2@b:4222')).toBe('nats://u:***@a:4222,nats://v:***@b:4222');
    expect(redactNatsUrl('nats://a:4222,nats://b:4222')).toBe('nats://a:4222,nats://b:4222');
  });

  it('nats urls - an empty list is a BAD_ARGUMENT naming it', () => {
    expect(() => splitNatsUrls(' , ')).toThrow(
      expect.objectContaining({ code: 'BAD_ARGUMENT', message: expect.stringContaining("' , '") }),
    );
    expect(splitNatsUrls('nats://a:1,,nats://b:2,')).toEqual(['nats://a:1', 'nats://b:2']);
  });
});
