import { HASH_THREAD_SOURCE } from '../../shared/pool/hash-thread-source.js';

/**
 * A hashing thread that throws on its `n`th update (or batch of updates) instead of hashing it, as a thread that
 * crashes would: the update gets no answer, the thread dies with the error.
 */
export function failingHashThreadSource(n: number): string {
  return `{
  const port = require('node:worker_threads').parentPort;
  const on = port.on.bind(port);
  let seen = 0;
  port.on = (event, listener) =>
    on(event, (m) => {
      if ((m.op === 'update' || m.op === 'updates') && ++seen === ${n}) throw new Error('injected hashing failure');
      listener(m);
    });
}
{ ${HASH_THREAD_SOURCE} }`;
}
