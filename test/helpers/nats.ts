import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { startNatsServer, type NatsServerHandle } from '../../shared/nats-server.js';

/** A real nats-server with JetStream on a free loopback port for this test file; stopped after. */
export function useNatsServer(): { readonly url: string; readonly server: NatsServerHandle } {
  let server: NatsServerHandle | undefined;
  const dir = mkdtempSync(join(tmpdir(), 'optimer-nats-'));
  beforeAll(async () => {
    server = await startNatsServer({ storeDir: dir });
  });
  afterAll(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    get url() {
      return server!.url;
    },
    get server() {
      return server!;
    },
  };
}
