import { createHash } from 'node:crypto';
import { open, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  CLIENT_OPTIONS,
  DEFAULT_FETCH_TIMEOUT_MS,
  type grpc,
  grpcClientCredentials,
  OptimerError,
  ShardServiceClient,
} from '../../shared/index.js';

/**
 * A content-addressed cache of blobs (shards, manifests, evaluation sets) in one folder, each
 * file named by its sha256. A blob enters the cache only after its bytes hash to its name;
 * concurrent requests for the same blob share one download.
 */
export class BlobCache {
  private readonly inflight = new Map<string, Promise<void>>();
  private readonly clients = new Map<string, grpc.Client>();
  /** transfers under way: close() cancels them (a closing worker stops fetching) */
  private readonly calls = new Set<grpc.ClientReadableStream<unknown>>();

  constructor(
    readonly dir: string,
    private readonly fetchTimeoutMs = DEFAULT_FETCH_TIMEOUT_MS,
  ) {}

  path(sha256: string): string {
    return join(this.dir, sha256);
  }

  async has(sha256: string, bytes: number): Promise<boolean> {
    return stat(this.path(sha256)).then(
      (s) => s.size === bytes,
      () => false,
    );
  }

  /** Makes sure the blob is in the cache, fetching it from the first seeder that has it. */
  async ensure(sha256: string, bytes: number, seeders: readonly string[]): Promise<string> {
    if (await this.has(sha256, bytes)) return this.path(sha256);
    let p = this.inflight.get(sha256);
    if (!p) {
      p = this.download(sha256, bytes, seeders).finally(() => this.inflight.delete(sha256));
      this.inflight.set(sha256, p);
    }
    await p;
    return this.path(sha256);
  }

  private async download(sha256: string, bytes: number, seeders: readonly string[]): Promise<void> {
    const errors: string[] = [];
    for (const address of seeders) {
      try {
        await this.fetchFrom(address, sha256, bytes);
        return;
      } catch (e) {
        errors.push(`${address}: ${(e as Error).message}`);
      }
    }
    throw new OptimerError('TRANSPORT', `blob ${sha256}: no seeder delivered it (${errors.join('; ') || 'no seeders'})`, {
      retryable: true,
    });
  }

  private client(address: string): grpc.Client {
    let c = this.clients.get(address);
    if (!c) {
      c = new ShardServiceClient(address, grpcClientCredentials(), CLIENT_OPTIONS);
      this.clients.set(address, c);
    }
    return c;
  }

  private async fetchFrom(address: string, sha256: string, bytes: number): Promise<void> {
    const tmp = join(this.dir, `.tmp-${sha256.slice(0, 16)}-${randomBytes(6).toString('hex')}`);
    const fh = await open(tmp, 'w');
    const hash = createHash('sha256');
    let got = 0;
    let call: grpc.ClientReadableStream<{ data: Buffer }> | undefined;
    try {
      const client = this.client(address) as grpc.Client & {
        fetch(req: unknown, opts: unknown): grpc.ClientReadableStream<{ data: Buffer }>;
      };
      call = client.fetch({ sha256, offset: 0 }, { deadline: Date.now() + this.fetchTimeoutMs });
      this.calls.add(call);
      for await (const chunk of call as AsyncIterable<{ data: Buffer }>) {
        got += chunk.data.length;
        if (got > bytes) {
          call.cancel();
          throw new Error(`more than the ${bytes} bytes announced`);
        }
        hash.update(chunk.data);
        await fh.write(chunk.data);
      }
      await fh.close();
      const digest = hash.digest('hex');
      if (got !== bytes || digest !== sha256)
        throw new Error(
          `received ${got} bytes hashing to ${digest.slice(0, 12)}…, expected ${bytes} bytes hashing to ${sha256.slice(0, 12)}…`,
        );
      await rename(tmp, this.path(sha256));
    } catch (e) {
      await fh.close().catch(() => undefined);
      await rm(tmp, { force: true });
      throw e;
    } finally {
      if (call) this.calls.delete(call);
    }
  }

  close(): void {
    for (const call of this.calls) call.cancel();
    this.calls.clear();
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}
