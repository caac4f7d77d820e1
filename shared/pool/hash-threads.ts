import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { OptimerError } from '../errors.js';
import { HASH_THREAD_SOURCE } from './hash-thread-source.js';
import { pairedBlocks, type Hashing, type ShardDigest, type ShardHash } from './shard-hash.js';
import { NATIVE_KERNELS_PATH } from '../native-kernels.js';

/**
 * Threads that hash the pool build's shards while the main thread reads, runs the kernels and
 * writes: every byte written is hashed twice (the shard's sha256, its name, and its piece's
 * sha256), which on the main thread took more time than reading the input files.
 *
 * Bytes are not copied when they lie in shared memory (the build's read buffers, sharedBytes()):
 * the threads read them in place, and update() resolves once they have, so the caller can reuse
 * its buffers as before. Other bytes are copied once into shared memory. Memory: at most one
 * chunk per writer in flight, no queue.
 */
export class HashThreads implements Hashing {
  private next = 0;

  private constructor(
    private readonly threads: HashThread[],
    /** every thread has the native SHA-NI kernel: a shard's two hashes run as one pass on one thread */
    readonly pair: boolean,
  ) {}

  /**
   * `count` threads (default: one per core, at most MAX_HASH_THREADS; none on one core), or
   * undefined where they cannot start (the build then hashes on the main thread). `source` is
   * what they run (tests give one that fails).
   */
  static async start(count = defaultHashThreads(), source = HASH_THREAD_SOURCE): Promise<HashThreads | undefined> {
    if (count < 1) return undefined;
    const workers: Worker[] = [];
    // the addon only where this thread has the kernel (not with OPTIMER_NATIVE=0)
    const addon = pairedBlocks(0) ? NATIVE_KERNELS_PATH : null;
    let pair: boolean;
    try {
      // no flags from the parent: one such as --input-type=module would make the source a module, without require()
      for (let i = 0; i < count; i++) workers.push(new Worker(source, { eval: true, execArgv: [], workerData: { addon } }));
      pair = (await Promise.all(workers.map(ready))).every((r) => r.pair === true);
    } catch {
      await Promise.all(workers.map((w) => w.terminate()));
      return undefined;
    }
    return new HashThreads(
      workers.map((w) => new HashThread(w)),
      pair,
    );
  }

  /**
   * With the native kernel, a shard's two hashes as one pass on one thread; without, the shard's
   * hash and its piece hashes go to two threads: a writer's two hashes run side by side.
   */
  shard(pieceBytes: number): ShardHash {
    const n = this.threads.length;
    const first = this.next++ % n;
    if (this.pair && pieceBytes % 64 === 0) return new ThreadedShardHash(this.threads[first]!, undefined, pieceBytes, true);
    const whole = this.threads[first]!;
    const pieces = pieceBytes > 0 ? this.threads[(first + 1) % n]! : undefined;
    return new ThreadedShardHash(whole, pieces, pieceBytes);
  }

  /** Stops the threads (idempotent); what is in flight is refused. */
  async close(): Promise<void> {
    await Promise.all(this.threads.map((t) => t.stop()));
  }
}

/** Hashing threads used where nothing says otherwise: more than the cores would only take turns. */
export const MAX_HASH_THREADS = 4;

export function defaultHashThreads(): number {
  const cores = availableParallelism();
  return cores < 2 ? 0 : Math.min(cores, MAX_HASH_THREADS);
}

let running = 0;

/** Hashing threads started and not yet exited, in this process (tests check none is left). */
export function runningHashThreads(): number {
  return running;
}

/** Resolves with the thread's first message (it is listening), rejects if it fails or exits first. */
function ready(w: Worker): Promise<{ pair?: boolean }> {
  running++;
  w.once('exit', () => running--);
  return new Promise((resolve, reject) => {
    let first: { pair?: boolean } = {};
    const done = (e?: Error) => {
      w.off('message', onMessage).off('error', done).off('exit', onExit);
      if (e) reject(e);
      else resolve(first);
    };
    const onMessage = (m: unknown) => {
      if (typeof m === 'object' && m !== null) first = m as { pair?: boolean };
      done();
    };
    const onExit = (code: number) => done(new Error(`exited with code ${code}`));
    w.on('message', onMessage).on('error', done).on('exit', onExit);
  });
}

type Reply = { id: number; out?: string | string[] | ShardDigest; error?: string };

/** One thread: requests by id, answered in order. */
class HashThread {
  private readonly pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();
  private nextId = 0;
  private nextStream = 0;
  private failure: Error | undefined;

  constructor(private readonly worker: Worker) {
    worker.on('message', (r: Reply) => {
      const p = this.pending.get(r.id);
      if (!p) return;
      this.settled(r.id);
      if (r.error !== undefined) p.reject(new OptimerError('RUNTIME', `pool build: hashing thread: ${r.error}`));
      else p.resolve(r);
    });
    worker.on('error', (e) => this.fail(e.message, e));
    worker.on('exit', (code) => this.fail(`it exited (code ${code})`));
    // an idle thread must not keep the process alive (a build that forgot close() still exits);
    // it is referenced while a request waits on it, or the process could exit under the await
    worker.unref();
  }

  open(pieceBytes: number, pair = false): number {
    const stream = this.nextStream++;
    if (!this.failure) this.worker.postMessage({ op: 'open', stream, pieceBytes, pair });
    return stream;
  }

  /** Pair-stream updates asked for in this turn, sent as one message: lockstep shards on this thread run side by side. */
  private batch: { stream: number; buffer: SharedArrayBuffer; offset: number; length: number }[] = [];
  private batchDone: Promise<Reply> | undefined;

  updateSoon(u: { stream: number; buffer: SharedArrayBuffer; offset: number; length: number }): Promise<Reply> {
    if (!this.batchDone) {
      this.batchDone = new Promise<void>((r) => queueMicrotask(r)).then(() => {
        const list = this.batch;
        this.batch = [];
        this.batchDone = undefined;
        return this.request({ op: 'updates', list });
      });
    }
    this.batch.push(u);
    return this.batchDone;
  }

  drop(stream: number): void {
    if (!this.failure) this.worker.postMessage({ op: 'drop', stream });
  }

  request(
    msg:
      | { op: 'update'; stream: number; buffer: SharedArrayBuffer; offset: number; length: number }
      | { op: 'updates'; list: { stream: number; buffer: SharedArrayBuffer; offset: number; length: number }[] }
      | { op: 'digest'; stream: number },
  ): Promise<Reply> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    if (this.pending.size === 0) this.worker.ref();
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...msg, id });
    });
  }

  async stop(): Promise<void> {
    this.fail('the build stopped it');
    await this.worker.terminate();
  }

  private settled(id: number): void {
    this.pending.delete(id);
    if (this.pending.size === 0) this.worker.unref();
  }

  /** Refuses what waits and what comes: the first reason is the one reported. */
  private fail(reason: string, cause?: Error): void {
    if (!this.failure) this.failure = new OptimerError('RUNTIME', `pool build: a hashing thread failed: ${reason}`, { cause });
    for (const [id, p] of this.pending) {
      this.settled(id);
      p.reject(this.failure);
    }
  }
}

/** A shard hashed on two threads (one where pieces are not hashed, or where `pair`: both hashes in one stream). */
class ThreadedShardHash implements ShardHash {
  private readonly wholeStream: number;
  private readonly piecesStream: number | undefined;

  constructor(
    private readonly whole: HashThread,
    private readonly pieces: HashThread | undefined,
    pieceBytes: number,
    private readonly pair = false,
  ) {
    this.wholeStream = pair ? whole.open(pieceBytes, true) : whole.open(0);
    this.piecesStream = pieces?.open(pieceBytes);
  }

  async update(bytes: Uint8Array): Promise<void> {
    if (bytes.length === 0) return;
    const shared = bytes.buffer instanceof SharedArrayBuffer ? bytes : copyToShared(bytes);
    const at = { buffer: shared.buffer as SharedArrayBuffer, offset: shared.byteOffset, length: shared.length };
    if (this.pair) {
      await this.whole.updateSoon({ stream: this.wholeStream, ...at });
      return;
    }
    await Promise.all([
      this.whole.request({ op: 'update', stream: this.wholeStream, ...at }),
      this.pieces?.request({ op: 'update', stream: this.piecesStream!, ...at }),
    ]);
  }

  async digest(): Promise<ShardDigest> {
    const [whole, pieces] = await Promise.all([
      this.whole.request({ op: 'digest', stream: this.wholeStream }),
      this.pieces?.request({ op: 'digest', stream: this.piecesStream! }),
    ]);
    if (this.pair) return whole.out as ShardDigest;
    return { sha256: whole.out as string, ...(pieces && { pieces: pieces.out as string[] }) };
  }

  discard(): void {
    this.whole.drop(this.wholeStream);
    if (this.piecesStream !== undefined) this.pieces?.drop(this.piecesStream);
  }
}

function copyToShared(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(new SharedArrayBuffer(bytes.length));
  out.set(bytes);
  return out;
}
