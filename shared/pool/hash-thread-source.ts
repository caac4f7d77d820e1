import { Sha256Pair } from './sha256-pair.js';

/**
 * The code a hashing thread runs (hash-threads.ts), as source text run with `eval: true`: a file
 * of its own would be a `.ts` file when the build runs from sources (tests), which a worker thread
 * cannot load. Kept to plain JavaScript with no imports but Node's.
 *
 * Each stream is one hash kept across messages: the whole-shard sha256 (pieceBytes 0) or the
 * sha256 of each piece of `pieceBytes` (as PieceHasher in ../pieces.ts does: an empty stream is
 * one empty piece). Messages of one stream arrive in order; each update and digest is answered
 * with its id, an update once its bytes have been read (the sender may then reuse them).
 *
 * A stream opened with `pair` is both hashes of a shard in one pass (Sha256Pair, whose source text
 * is included here, on the native SHA-NI kernel loaded from workerData.addon); the first message,
 * `ready`, says whether the thread has that kernel. `updates` is the updates of several such streams
 * at once (those of one turn of the sender), shards in lockstep hashed side by side.
 */
export const HASH_THREAD_SOURCE = `'use strict';
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const streams = new Map();
${Sha256Pair.toString()}
let blocks = null;
try {
  if (workerData && workerData.addon) blocks = require(workerData.addon).sha256Blocks || null;
} catch {
  blocks = null;
}
function cutPiece(s) {
  s.pieces.push(s.hash.digest('hex'));
  s.hash = createHash('sha256');
  s.filled = 0;
}
function update(s, bytes) {
  if (s.pieceBytes === 0) return void s.hash.update(bytes);
  for (let at = 0; at < bytes.length; ) {
    const n = Math.min(bytes.length - at, s.pieceBytes - s.filled);
    s.hash.update(bytes.subarray(at, at + n));
    s.filled += n;
    at += n;
    if (s.filled === s.pieceBytes) cutPiece(s);
  }
}
function digest(s) {
  if (s.pieceBytes === 0) return s.hash.digest('hex');
  if (s.filled > 0 || s.pieces.length === 0) cutPiece(s);
  return s.pieces;
}
parentPort.on('message', (m) => {
  if (m.op === 'open' && m.pair) return void streams.set(m.stream, { pair: new Sha256Pair(blocks, m.pieceBytes) });
  if (m.op === 'open') return void streams.set(m.stream, { pieceBytes: m.pieceBytes, hash: createHash('sha256'), filled: 0, pieces: [] });
  if (m.op === 'drop') return void streams.delete(m.stream);
  if (m.op === 'updates') {
    const pairs = [];
    const bytes = [];
    for (const u of m.list) {
      const s = streams.get(u.stream);
      if (!s || !s.pair) return void parentPort.postMessage({ id: m.id, error: 'no stream ' + u.stream });
      pairs.push(s.pair);
      bytes.push(new Uint8Array(u.buffer, u.offset, u.length));
    }
    Sha256Pair.updateMany(pairs, bytes);
    return void parentPort.postMessage({ id: m.id });
  }
  const s = streams.get(m.stream);
  if (!s) return void parentPort.postMessage({ id: m.id, error: 'no stream ' + m.stream });
  if (m.op === 'update') {
    const bytes = new Uint8Array(m.buffer, m.offset, m.length);
    if (s.pair) s.pair.update(bytes);
    else update(s, bytes);
    parentPort.postMessage({ id: m.id });
  } else {
    streams.delete(m.stream);
    parentPort.postMessage({ id: m.id, out: s.pair ? s.pair.digest() : digest(s) });
  }
});
parentPort.postMessage({ ready: true, pair: blocks !== null });
`;
