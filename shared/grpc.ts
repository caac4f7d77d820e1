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

/** Client options measured to roughly double loopback throughput (see ../shared/FACTS.md). */
export const CLIENT_OPTIONS: grpc.ClientOptions = {
  'grpc-node.flow_control_window': 64 * 1024 * 1024,
  'grpc.max_receive_message_length': 8 * 1024 * 1024,
};

export { grpc };
