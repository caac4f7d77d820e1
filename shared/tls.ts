import { readFileSync } from 'node:fs';
import { OptimerError } from './errors.js';
import { grpc } from './grpc.js';

/** PEM files: the CA that signs the peers' certificates, and this side's certificate and key. */
export interface TlsFiles {
  ca?: string;
  cert?: string;
  key?: string;
}

/** The PEM text of `files`, read once; a missing or unreadable file is a SETUP error naming the flag. */
export interface TlsPem {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

export function readTlsFiles(files: TlsFiles, flagPrefix: string): TlsPem {
  if (!!files.cert !== !!files.key)
    throw new OptimerError('BAD_ARGUMENT', `${flagPrefix}-cert and ${flagPrefix}-key go together: give both or neither`);
  const read = (what: 'ca' | 'cert' | 'key'): Buffer | undefined => {
    const path = files[what];
    if (!path) return undefined;
    try {
      const pem = readFileSync(path);
      if (!pem.includes('-----BEGIN ')) throw new Error('not a PEM file');
      return pem;
    } catch (e) {
      throw new OptimerError('SETUP', `${flagPrefix}-${what} ${path}: ${(e as Error).message}`, { cause: e });
    }
  };
  const pem: TlsPem = {};
  for (const k of ['ca', 'cert', 'key'] as const) {
    const v = read(k);
    if (v) pem[k] = v;
  }
  return pem;
}

/**
 * Mutual TLS for shard transfer (the coordinator's seeder, workers' fetches and peers), set once
 * by the CLI for the whole process; unset, gRPC stays plaintext (a local run on loopback).
 */
let grpcTls: TlsPem | undefined;

export function configureGrpcTls(files: TlsFiles | undefined): void {
  if (!files || (!files.ca && !files.cert && !files.key)) {
    grpcTls = undefined;
    return;
  }
  const pem = readTlsFiles(files, '--grpc-tls');
  if (!pem.ca || !pem.cert || !pem.key)
    throw new OptimerError(
      'BAD_ARGUMENT',
      'gRPC TLS is mutual: give all of --grpc-tls-ca, --grpc-tls-cert and --grpc-tls-key (or OPTIMER_GRPC_TLS_CA/CERT/KEY)',
    );
  grpcTls = pem;
}

export function grpcTlsEnabled(): boolean {
  return grpcTls !== undefined;
}

/** A server that, with TLS configured, accepts only clients with a certificate signed by the CA. */
export function grpcServerCredentials(): grpc.ServerCredentials {
  if (!grpcTls) return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(grpcTls.ca!, [{ private_key: grpcTls.key!, cert_chain: grpcTls.cert! }], true);
}

/** A client that, with TLS configured, checks the server against the CA and shows its own certificate. */
export function grpcClientCredentials(): grpc.ChannelCredentials {
  if (!grpcTls) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(grpcTls.ca!, grpcTls.key!, grpcTls.cert!);
}
