import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { CHUNK_BYTES, grpc, shardServiceDefinition } from './grpc.js';
import type { Logger } from './logging.js';
import { grpcServerCredentials } from './tls.js';

/**
 * Serves content-addressed blobs (pool shards, the manifest, evaluation sets) over gRPC. Only
 * registered hashes are served: a request is a hash, never a path. In shared/ because both sides
 * serve: the coordinator its pool, and (next) a worker its cache to its peers.
 */
export class Seeder {
  private readonly blobs = new Map<string, string>();
  private server: grpc.Server | undefined;
  address = '';

  constructor(private readonly log: Logger) {}

  register(sha256: string, path: string): void {
    this.blobs.set(sha256, path);
  }

  async start(host: string, port = 0, advertiseHost?: string): Promise<string> {
    const server = new grpc.Server();
    server.addService(shardServiceDefinition, {
      fetch: (call: grpc.ServerWritableStream<{ sha256: string; offset: number }, { data: Uint8Array }>) => void this.fetch(call),
    });
    const bound = await new Promise<number>((resolve, reject) => {
      server.bindAsync(`${host.includes(':') ? `[${host}]` : host}:${port}`, grpcServerCredentials(), (err, p) =>
        err ? reject(err) : resolve(p),
      );
    });
    this.server = server;
    this.address = `${advertiseHost ?? host}:${bound}`;
    return this.address;
  }

  private async fetch(call: grpc.ServerWritableStream<{ sha256: string; offset: number }, { data: Uint8Array }>): Promise<void> {
    const { sha256, offset } = call.request;
    const fail = (code: grpc.status, details: string): void => {
      call.emit('error', { code, details });
    };
    if (typeof sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(sha256))
      return fail(grpc.status.INVALID_ARGUMENT, 'sha256: expected a lowercase hex sha256');
    const path = this.blobs.get(sha256);
    if (!path) return fail(grpc.status.NOT_FOUND, `blob ${sha256} is not served here`);
    let size: number;
    try {
      size = (await stat(path)).size;
    } catch {
      return fail(grpc.status.NOT_FOUND, `blob ${sha256} is missing on the seeder`);
    }
    if (!Number.isSafeInteger(offset) || offset < 0 || offset > size)
      return fail(grpc.status.OUT_OF_RANGE, `offset ${offset} outside a blob of ${size} bytes`);
    const stream = createReadStream(path, { start: offset, highWaterMark: CHUNK_BYTES });
    call.on('cancelled', () => stream.destroy());
    try {
      for await (const chunk of stream) {
        if (!call.write({ data: chunk as Buffer })) await new Promise((r) => call.once('drain', r));
      }
      call.end();
    } catch (e) {
      this.log.warn({ sha256, err: (e as Error).message }, 'seeder: read failed');
      fail(grpc.status.INTERNAL, `reading blob ${sha256} failed`);
    }
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        s.forceShutdown();
        resolve();
      }, 2000);
      s.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
