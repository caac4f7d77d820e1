import { createHash } from 'node:crypto';
import { CLIENT_OPTIONS, type grpc, grpcClientCredentials, OptimerError, ShardServiceClient } from '../shared/index.js';

/** How long the seeder probe waits for its own manifest: a reachable seeder answers in milliseconds. */
const PROBE_TIMEOUT_MS = 10_000;

/**
 * Fetches a blob from the seeder at the address workers are told to use, before any work is
 * handed out: a wrong `--advertise-host` (a typo, a name that does not resolve, a host that is not
 * this one) would otherwise fail every trial of the study on every worker.
 */
export async function probeSeeder(address: string, blob: { sha256: string; bytes: number }, timeoutMs = PROBE_TIMEOUT_MS): Promise<void> {
  const client = new ShardServiceClient(address, grpcClientCredentials(), CLIENT_OPTIONS) as unknown as grpc.Client & {
    fetch(req: unknown, opts: unknown): grpc.ClientReadableStream<{ data: Buffer }>;
  };
  try {
    const hash = createHash('sha256');
    let got = 0;
    const call = client.fetch({ sha256: blob.sha256, offset: 0 }, { deadline: Date.now() + timeoutMs });
    for await (const chunk of call as AsyncIterable<{ data: Buffer }>) {
      got += chunk.data.length;
      hash.update(chunk.data);
    }
    if (got !== blob.bytes || hash.digest('hex') !== blob.sha256) throw new Error(`it served other bytes than the pool's manifest`);
  } catch (e) {
    throw new OptimerError(
      'SETUP',
      `the shard seeder is not reachable at ${address}, the address workers are told to use: ${(e as Error).message}. ` +
        'Check --advertise-host (a name workers resolve to this machine) and --grpc-host (an interface they can reach).',
      { cause: e },
    );
  } finally {
    client.close();
  }
}
