import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { OPTIMER_PROTO } from './wire.js';

/** The ShardService definition and client class, from the one schema in proto/optimer.proto. */
const definition = protoLoader.loadSync(OPTIMER_PROTO, { keepCase: false, longs: Number, defaults: true, enums: String });
const pkg = grpc.loadPackageDefinition(definition) as unknown as {
  optimer: { v1: { ShardService: grpc.ServiceClientConstructor } };
};

export const ShardServiceClient = pkg.optimer.v1.ShardService;
export const shardServiceDefinition = ShardServiceClient.service;

/** Bytes per streamed chunk; 1 MiB keeps messages under gRPC's default 4 MiB limit. */
export const CHUNK_BYTES = 1 << 20;

/**
 * The largest request a seeder takes, bytes: a FetchRequest is a hash and two integers (under
 * 100 bytes). gRPC's default, 4 MiB, would let every hostile call make the server buffer 4 MiB
 * before anything is checked; larger requests are refused with RESOURCE_EXHAUSTED, undecoded.
 */
export const MAX_REQUEST_BYTES = 4096;

/** Client options measured to roughly double loopback throughput (see ../shared/FACTS.md). */
export const CLIENT_OPTIONS: grpc.ClientOptions = {
  'grpc-node.flow_control_window': 64 * 1024 * 1024,
  'grpc.max_receive_message_length': 8 * 1024 * 1024,
};

/**
 * Options for piece requests: a flow-control window of half a piece (at least 64 KiB). A holder's
 * last write of a piece then completes only once the asker has taken half of it, and the holder
 * keeps its upload slot until then (Seeder), so slots bound how many pieces share its uplink:
 * with the 64 MiB window every asker's piece was handed over at once and all of them crawled
 * through a slow uplink together. Half of a 4 MiB piece (2 MiB) still fills a 10 Gbit/s link
 * with a 1 ms round trip (1.25 MB in flight).
 */
export function pieceClientOptions(pieceBytes: number): grpc.ClientOptions {
  return { ...CLIENT_OPTIONS, 'grpc-node.flow_control_window': Math.max(64 * 1024, Math.ceil(pieceBytes / 2)) };
}

export { grpc };
