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

export { grpc };
