import { grpc, shardServiceDefinition } from '../../shared/grpc.js';

export type FetchCall = grpc.ServerWritableStream<{ sha256: string; offset: number; length: number }, { data: Uint8Array }>;

/**
 * A peer's gRPC shard server whose answers the test shapes (corrupt, slow, stalling), on a free
 * loopback port; `closers` gets its shutdown. Returns the port.
 */
export async function startFakePeer(fetch: (call: FetchCall) => void | Promise<void>, closers: (() => unknown)[]): Promise<number> {
  const server = new grpc.Server();
  server.addService(shardServiceDefinition, { fetch });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  closers.push(async () => server.forceShutdown());
  return port;
}
