import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { grpc, MAX_REQUEST_BYTES, ShardServiceClient } from '../../shared/grpc.js';
import { silentLogger } from '../../shared/logging.js';
import { Seeder } from '../../shared/seeder.js';
import { useTempDir } from '../helpers/temp.js';

/**
 * Hostile requests to the shard service. The coordinator's seeder and every worker's peer server
 * are this one class (shared/seeder.ts), so one server stands for both.
 */
const tmp = useTempDir('chaos-grpc');
const FETCH = '/optimer.v1.ShardService/Fetch';
let seeder: Seeder;
let address: string;
let raw: grpc.Client;
const data = randomBytes(100_000);
const sha = createHash('sha256').update(data).digest('hex');

beforeAll(async () => {
  seeder = new Seeder(silentLogger());
  const path = join(tmp, 'blob');
  await writeFile(path, data);
  seeder.register(sha, path);
  address = await seeder.start('127.0.0.1');
  raw = new grpc.Client(address, grpc.credentials.createInsecure());
});
afterAll(async () => {
  raw?.close();
  await seeder?.close();
});

/** Sends `bytes` as the request as they are (no encoding): what the server answers, and the bytes it streamed. */
function send(bytes: Uint8Array): Promise<{ code: grpc.status; details: string; got: number }> {
  return new Promise((resolve) => {
    let got = 0;
    const call = raw.makeServerStreamRequest(
      FETCH,
      (b: Uint8Array) => Buffer.from(b),
      (b: Buffer) => b,
      bytes,
    );
    call.on('data', (b: Buffer) => (got += b.length));
    call.on('error', (e: grpc.ServiceError) => resolve({ code: e.code, details: e.details, got }));
    call.on('end', () => resolve({ code: grpc.status.OK, details: '', got }));
  });
}

/** A FetchRequest encoded by hand (field 1: sha256, 2: offset, 3: length), so any value can be sent. */
function request(sha256: string, offset = 0, length = 0): Uint8Array {
  const varint = (n: bigint): number[] => {
    const out: number[] = [];
    do {
      let b = Number(n & 0x7fn);
      n >>= 7n;
      if (n > 0n) b |= 0x80;
      out.push(b);
    } while (n > 0n);
    return out;
  };
  const s = Buffer.from(sha256);
  return Uint8Array.from([0x0a, ...varint(BigInt(s.length)), ...s, 0x10, ...varint(BigInt(offset)), 0x18, ...varint(BigInt(length))]);
}

describe('chaos - hostile gRPC requests to a seeder (the coordinator or a worker serving peers)', () => {
  it('chaos - oversized, undecodable and out-of-range requests are refused with a status; the server goes on serving', async () => {
    // oversized: refused before anything is decoded, whatever they hold
    for (const bytes of [MAX_REQUEST_BYTES + 1, 64 * 1024, 8 * 1024 * 1024])
      expect([bytes, (await send(request('a'.repeat(bytes)))).code]).toEqual([bytes, grpc.status.RESOURCE_EXHAUSTED]);
    // many at once do not starve or crash it
    const flood = await Promise.all(Array.from({ length: 50 }, () => send(randomBytes(1024 * 1024))));
    expect(new Set(flood.map((r) => r.code))).toEqual(new Set([grpc.status.RESOURCE_EXHAUSTED]));
    // not a FetchRequest at all: random bytes give an error status, never a crash
    for (let i = 0; i < 50; i++) {
      const r = await send(randomBytes(1 + ((i * 37) % 1000)));
      expect(r.got).toBe(0);
    }
    // a name is never a path, an unknown hash is not served, ranges are checked
    const cases: [Uint8Array, grpc.status, RegExp][] = [
      [request('../../../../etc/passwd'), grpc.status.INVALID_ARGUMENT, /expected a lowercase hex sha256/],
      [request(`${sha.slice(0, 60)}/../`), grpc.status.INVALID_ARGUMENT, /expected a lowercase hex sha256/],
      [request(sha.toUpperCase()), grpc.status.INVALID_ARGUMENT, /expected a lowercase hex sha256/],
      [request('0'.repeat(64)), grpc.status.NOT_FOUND, /is not served here/],
      [request(sha, 2 ** 62), grpc.status.OUT_OF_RANGE, /outside a blob of 100000 bytes/],
      [request(sha, 0, 2 ** 62), grpc.status.OUT_OF_RANGE, /runs past the end/],
      [request(sha, 99_999, 2), grpc.status.OUT_OF_RANGE, /runs past the end/],
    ];
    for (const [req, code, details] of cases) {
      const r = await send(req);
      expect({ code: r.code, got: r.got }).toEqual({ code, got: 0 });
      expect(r.details).toMatch(details);
    }
    // and it still serves: the whole blob, and a range, byte for byte
    const client = new ShardServiceClient(address, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
      fetch(req: unknown): grpc.ClientReadableStream<{ data: Buffer }>;
    };
    const fetch = (req: unknown) =>
      new Promise<Buffer>((resolve, reject) => {
        const parts: Buffer[] = [];
        const call = client.fetch(req);
        call.on('data', (c: { data: Buffer }) => parts.push(c.data));
        call.on('error', reject);
        call.on('end', () => resolve(Buffer.concat(parts)));
      });
    expect((await fetch({ sha256: sha, offset: 0, length: 0 })).equals(data)).toBe(true);
    expect((await fetch({ sha256: sha, offset: 500, length: 1000 })).equals(data.subarray(500, 1500))).toBe(true);
    client.close();
  }, 60_000);
});
