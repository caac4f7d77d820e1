import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { configureGrpcTls, configureNats, OptimerError } from '../shared/index.js';
import { reportError } from './output.js';

/**
 * NATS credentials and TLS for NATS and gRPC, for every command. A flag sets the matching
 * OPTIMER_* variable, which the worker processes `optimer run` starts inherit; secrets are read
 * from variables or files only, so they never show in `ps`.
 */
const FLAGS = [
  ['--nats-user <name>', 'OPTIMER_NATS_USER', 'NATS user (its password: $OPTIMER_NATS_PASSWORD or --nats-password-file)'],
  ['--nats-password-file <file>', 'OPTIMER_NATS_PASSWORD_FILE', 'file holding the NATS password'],
  ['--nats-token-file <file>', 'OPTIMER_NATS_TOKEN_FILE', 'file holding a NATS token (or $OPTIMER_NATS_TOKEN)'],
  ['--nats-tls-ca <pem>', 'OPTIMER_NATS_TLS_CA', "CA certificate that signed the NATS server's (turns TLS on)"],
  ['--nats-tls-cert <pem>', 'OPTIMER_NATS_TLS_CERT', 'client certificate for a NATS server that verifies clients'],
  ['--nats-tls-key <pem>', 'OPTIMER_NATS_TLS_KEY', 'key of --nats-tls-cert'],
  ['--grpc-tls-ca <pem>', 'OPTIMER_GRPC_TLS_CA', 'mutual TLS for shard transfer: the CA that signs every seeder and worker certificate'],
  ['--grpc-tls-cert <pem>', 'OPTIMER_GRPC_TLS_CERT', "this process's certificate for shard transfer"],
  ['--grpc-tls-key <pem>', 'OPTIMER_GRPC_TLS_KEY', 'key of --grpc-tls-cert'],
] as const;

export function registerSecurityOptions(program: Command): void {
  for (const [flag, env, help] of FLAGS) program.option(flag, `${help} [$${env}]`);
  program.hook('preAction', () => {
    try {
      applySecurity(program.opts(), process.env);
    } catch (e) {
      reportError(e, false);
      process.exit();
    }
  });
}

function attr(flag: string): string {
  return flag
    .slice(2)
    .split(' ')[0]!
    .replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

function secretFromFile(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (e) {
    throw new OptimerError('SETUP', `${what} ${path}: ${(e as Error).message}`, { cause: e });
  }
}

/** Flags into the environment (for child processes), then the environment into the settings. */
export function applySecurity(opts: Record<string, unknown>, env: NodeJS.ProcessEnv): void {
  for (const [flag, name] of FLAGS) {
    const v = opts[attr(flag)];
    if (typeof v === 'string') env[name] = v;
  }
  const password =
    env.OPTIMER_NATS_PASSWORD ??
    (env.OPTIMER_NATS_PASSWORD_FILE ? secretFromFile(env.OPTIMER_NATS_PASSWORD_FILE, '--nats-password-file') : undefined);
  const token =
    env.OPTIMER_NATS_TOKEN ?? (env.OPTIMER_NATS_TOKEN_FILE ? secretFromFile(env.OPTIMER_NATS_TOKEN_FILE, '--nats-token-file') : undefined);
  const pick = (v: string | undefined): string | undefined => (v ? v : undefined);
  const tls = { ca: pick(env.OPTIMER_NATS_TLS_CA), cert: pick(env.OPTIMER_NATS_TLS_CERT), key: pick(env.OPTIMER_NATS_TLS_KEY) };
  configureNats({
    ...(env.OPTIMER_NATS_USER ? { user: env.OPTIMER_NATS_USER } : {}),
    ...(password ? { password } : {}),
    ...(token ? { token } : {}),
    ...(env.OPTIMER_NATS_INBOX_PREFIX ? { inboxPrefix: env.OPTIMER_NATS_INBOX_PREFIX } : {}),
    tls: dropUndefined(tls),
  });
  configureGrpcTls(
    dropUndefined({ ca: pick(env.OPTIMER_GRPC_TLS_CA), cert: pick(env.OPTIMER_GRPC_TLS_CERT), key: pick(env.OPTIMER_GRPC_TLS_KEY) }),
  );
}

function dropUndefined<T extends Record<string, string | undefined>>(o: T): { [K in keyof T]?: string } {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as { [K in keyof T]?: string };
}
