import { type ConnectionOptions, connect, type JetStreamClient, type NatsConnection, type PubAck } from 'nats';
import { OptimerError } from './errors.js';
import { retry } from './retry.js';
import { readTlsFiles, type TlsFiles, type TlsPem } from './tls.js';

/**
 * How this process authenticates to NATS, set once by the CLI (from flags and OPTIMER_NATS_*
 * variables, so passwords stay out of `ps`); unset, a connection is plaintext and anonymous, as
 * a local run on loopback needs. Credentials in the URL (`nats://user:pass@host`) win over these.
 */
export interface NatsSecurity {
  user?: string;
  password?: string;
  token?: string;
  /** TLS: the CA that signs the server's certificate, and a client certificate when it asks for one */
  tls?: TlsFiles;
  /** where replies come back; each role gets its own so no one can read another's (default `_INBOX_<user>`) */
  inboxPrefix?: string;
}

let security: Readonly<NatsSecurity> = {};
let tlsPem: TlsPem | undefined;

export function configureNats(s: NatsSecurity): void {
  const tls = s.tls && (s.tls.ca || s.tls.cert || s.tls.key) ? s.tls : undefined;
  tlsPem = tls ? readTlsFiles(tls, '--nats-tls') : undefined;
  if (s.token && s.user) throw new OptimerError('BAD_ARGUMENT', 'give a NATS user and password, or a token, not both');
  if (s.password && !s.user) throw new OptimerError('BAD_ARGUMENT', 'a NATS password needs a user (--nats-user or OPTIMER_NATS_USER)');
  security = Object.freeze({ ...s, ...(tls ? { tls } : {}) });
}

/** `url` (one URL, or several comma-separated) without its passwords, for messages and files. */
export function redactNatsUrl(url: string): string {
  return url.replace(/(^|,)(\s*[a-z]+:\/\/[^:@/,]+):[^@/,]*@/gi, '$1$2:***@');
}

/**
 * The servers of a `--nats` value: one URL, or a cluster's URLs comma-separated
 * (`nats://a:4222,nats://b:4222`), so a client reaches the cluster while any one node is down.
 */
export function splitNatsUrls(url: string): string[] {
  const parts = url
    .split(',')
    .map((u) => u.trim())
    .filter((u) => u !== '');
  if (parts.length === 0) throw new OptimerError('BAD_ARGUMENT', `no NATS URL in '${url}'`);
  return parts;
}

/**
 * The connect options for `url` (one URL, or several comma-separated: every node of a cluster)
 * under this process's security settings. Credentials in a URL apply to all (the first that has
 * them); one `tls://` URL turns TLS on for all.
 */
export function natsConnectOptions(url: string, name: string): ConnectionOptions {
  const servers: string[] = [];
  let scheme = 'nats';
  let urlUser: string | undefined;
  let urlPass: string | undefined;
  for (const part of splitNatsUrls(url)) {
    const m = /^([a-z]+):\/\/(?:([^:@/]*)(?::([^@/]*))?@)?(.+)$/i.exec(part);
    if (m?.[1]?.toLowerCase() === 'tls') scheme = 'tls';
    if (m?.[2] && urlUser === undefined) {
      urlUser = decodeURIComponent(m[2]);
      urlPass = m[3] !== undefined ? decodeURIComponent(m[3]) : undefined;
    }
    servers.push(m ? `nats://${m[4]}` : part);
  }
  const o: ConnectionOptions = {
    servers: servers.length === 1 ? servers[0]! : servers,
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    timeout: CONNECT_TIMEOUT_MS,
  };
  const user = urlUser ?? security.user;
  if (user !== undefined) {
    o.user = user;
    const pass = urlUser !== undefined ? urlPass : security.password;
    if (pass !== undefined) o.pass = pass;
  } else if (security.token) o.token = security.token;
  if (scheme === 'tls' || tlsPem) {
    const tls: NonNullable<ConnectionOptions['tls']> = {};
    if (tlsPem?.ca) tls.ca = tlsPem.ca.toString();
    if (tlsPem?.cert) tls.cert = tlsPem.cert.toString();
    if (tlsPem?.key) tls.key = tlsPem.key.toString();
    o.tls = tls;
  }
  const prefix = security.inboxPrefix ?? (user ? `_INBOX_${user}` : undefined);
  if (prefix) o.inboxPrefix = prefix;
  return o;
}

/** A first connection waits this long for the server's handshake (a TLS server missing our client certificate never answers). */
const CONNECT_TIMEOUT_MS = 10_000;

/** Connects to NATS, reconnecting forever after a loss; a first failure is a TRANSPORT error, refused credentials or TLS a SETUP one. */
export async function connectNats(url: string, name: string): Promise<NatsConnection> {
  const o = natsConnectOptions(url, name);
  try {
    return await connect(o);
  } catch (e) {
    throw explainConnectError(e, redactNatsUrl(url), o);
  }
}

function explainConnectError(e: unknown, url: string, o: ConnectionOptions): OptimerError {
  const err = e as { code?: unknown; message?: unknown };
  const msg = String(err?.message ?? e);
  const who = o.user ? `user '${o.user}'` : o.token ? 'a token' : 'no credentials';
  if (err?.code === 'AUTHORIZATION_VIOLATION' || /authorization violation|authentication/i.test(msg))
    return new OptimerError(
      'SETUP',
      `NATS at ${url} refused our credentials (${who}): give --nats-user with OPTIMER_NATS_PASSWORD (or --nats-password-file), or OPTIMER_NATS_TOKEN, as the server's config has them`,
      { cause: e },
    );
  if (o.tls && (err?.code === 'TIMEOUT' || /timeout/i.test(msg)))
    return new OptimerError(
      'SETUP',
      `NATS at ${url} did not complete the TLS handshake in ${CONNECT_TIMEOUT_MS / 1000} s: a server that verifies clients drops one without a certificate signed by its CA (give --nats-tls-cert and --nats-tls-key), or it does not speak TLS`,
      { cause: e },
    );
  if (/tls|ssl|certificate|self.signed|altname/i.test(msg))
    return new OptimerError(
      'SETUP',
      `TLS with NATS at ${url} failed (${msg}): ${o.tls ? "check --nats-tls-ca (the CA that signed the server's certificate) and that the certificate names this host" : 'the server requires TLS: use a tls:// URL and --nats-tls-ca (and --nats-tls-cert/--nats-tls-key if it verifies clients)'}`,
      { cause: e },
    );
  return new OptimerError('TRANSPORT', `cannot connect to NATS at ${url}: ${msg}`, { cause: e, retryable: true });
}

/**
 * Whether a NATS error says that nothing answers the JetStream API: nats.js throws a bare
 * `503` (no responders) from `jetstreamManager()`, `views.kv()`, `consumers.get()` and a
 * JetStream publish when the server runs without JetStream (or the account has none).
 */
export function isNoJetStream(e: unknown): boolean {
  const err = e as { code?: unknown; message?: unknown } | null;
  return err?.code === '503' || (typeof err?.message === 'string' && /jetstream not enabled/i.test(err.message));
}

/** What to tell a user whose NATS server has no JetStream: what is wrong and how to enable it. */
export function noJetStreamMessage(url: string): string {
  return (
    `the NATS server at ${url} has no JetStream (nothing answers its JetStream API); optimer needs it: ` +
    "start the server with 'nats-server -js' (and '-sd DIR' for its store), or add 'jetstream {}' to its config"
  );
}

/** A SETUP error for a server without JetStream, when `e` says so; `e` itself otherwise. */
export function explainNoJetStream(e: unknown, url: string): unknown {
  return isNoJetStream(e) ? new OptimerError('SETUP', noJetStreamMessage(url), { cause: e }) : e;
}

/**
 * A JetStream publish that survives a NATS restart (a publish is not buffered while the server
 * is down: it times out), de-duplicated by `msgID` so a retry never stores a message twice.
 */
export function publishWithRetry(
  js: JetStreamClient,
  subject: string,
  data: Uint8Array,
  o: { msgID: string; signal?: AbortSignal; attempts?: number },
): Promise<PubAck> {
  return retry(() => js.publish(subject, data, { msgID: o.msgID, timeout: 5000 }), {
    attempts: o.attempts ?? 20,
    initialMs: 100,
    maxMs: 2000,
    ...(o.signal ? { signal: o.signal } : {}),
  });
}
