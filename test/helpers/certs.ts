import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface Certs {
  ca: string;
  server: { cert: string; key: string };
  client: { cert: string; key: string };
}

/** A CA and two certificates it signs (for 127.0.0.1 and localhost, server and client use), made with the openssl CLI in `dir`. */
export function makeCerts(dir: string): Certs {
  const ssl = (...args: string[]): void => {
    execFileSync('openssl', args, { cwd: dir, stdio: 'ignore', timeout: 30_000 });
  };
  ssl(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '1',
    '-subj',
    '/CN=optimer test CA',
    '-keyout',
    'ca-key.pem',
    '-out',
    'ca.pem',
  );
  writeFileSync(
    join(dir, 'ext.cnf'),
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n',
  );
  for (const name of ['server', 'client']) {
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=optimer ${name}`, '-keyout', `${name}-key.pem`, '-out', `${name}.csr`);
    ssl(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca-key.pem',
      '-CAcreateserial',
      '-days',
      '1',
      '-extfile',
      'ext.cnf',
      '-out',
      `${name}.pem`,
    );
  }
  const p = (f: string): string => join(dir, f);
  return {
    ca: p('ca.pem'),
    server: { cert: p('server.pem'), key: p('server-key.pem') },
    client: { cert: p('client.pem'), key: p('client-key.pem') },
  };
}
