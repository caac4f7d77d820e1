import ort from 'onnxruntime-node';
import { type ExecutionProvider, type Logger, type Pool, type TensorWeighting, type WeightFeed, weightParts } from '../../shared/index.js';
import { allocateWidened, canWiden, mergeInto, mergeIntoWidened } from '../merge/merge.js';
import { createMergedSession, sessionOptions } from './session.js';
import type { LmIo } from './session-model.js';
import type { ProviderGraphs } from './widen.js';

/*
 * How a trial's merged weights reach ONNX Runtime (WeightFeed):
 *  - `inputs` (the CPU default): the weights are float32 graph inputs of one session per pool,
 *    which wraps arrays the merge writes into: no session per trial, no copy of the weights, no
 *    float32 copies of 16-bit ones. ONNX Runtime packs each MatMul's weights per batch instead of
 *    once per session (a few percent of a forward pass at small batches; see the README, one trial).
 *  - `initializers`: a session per trial with the merge as its external data, which ONNX Runtime
 *    copies (and, for a 16-bit pool on the CPU, folds into float32 copies). The only choice on a
 *    GPU, where inputs in host memory would be copied to the device at every batch.
 */

export interface TrialSessionOptions {
  provider: ExecutionProvider;
  /** on the CPU provider (default `inputs`); other providers always take `initializers` */
  weightFeed?: WeightFeed;
  /** native merge threads (default 1) */
  mergeThreads?: number;
  /** ONNX Runtime's intra-op threads (default: its own, one per core) */
  intraOpThreads?: number;
}

/** A session holding one trial's merged weights, and what to feed it beside each batch. */
export interface TrialSession {
  session: ort.InferenceSession;
  io: LmIo;
  /** the weights, when they are graph inputs: fed with every batch */
  weights?: Record<string, ort.Tensor>;
}

export interface TrialTimings {
  mergeMs: number;
  /** session creation: 0 when a pool's session is reused */
  sessionMs: number;
}

/** A pool's session with its weights as inputs, kept across trials. */
interface Resident {
  key: string;
  session: ort.InferenceSession;
  io: LmIo;
  arrays: Map<string, Float32Array>;
  weights: Record<string, ort.Tensor>;
}

/**
 * Merges a trial's weights and gives out a session that holds them, one trial at a time (a worker
 * runs one job at a time). Keeps what the next trial can reuse: with `inputs`, one pool's session
 * and its weight arrays (studies sharing a pool share them); with `initializers`, the merge
 * buffers. A pool whose session cannot take its weights as inputs (a graph ONNX Runtime refuses
 * that way, float64 weights) is evaluated with `initializers`, said once in the log.
 */
export class TrialSessions {
  private resident?: Resident;
  /** `initializers` merge buffers, one per part of the layout (reused: no page faults) */
  private parts: Uint8Array[] = [];
  /** pools (by graph) whose weights cannot be inputs */
  private readonly noInputs = new Set<string>();
  /** a trial is evaluating in the resident session: close() leaves releasing it to that trial */
  private busy = false;
  private closed = false;

  constructor(private readonly log?: Logger) {}

  /** Merges `weighting`, runs `use` on a session holding the result, releases what is not kept. */
  async run<T>(
    pool: Pool,
    graphs: ProviderGraphs,
    weighting: TensorWeighting,
    options: TrialSessionOptions,
    use: (s: TrialSession) => Promise<T>,
    signal?: AbortSignal,
  ): Promise<{ value: T; timings: TrialTimings; weightFeed: WeightFeed }> {
    const feed = options.provider === 'cpu' ? (options.weightFeed ?? 'inputs') : 'initializers';
    const key = `${pool.manifest.graph.sha256}:${options.intraOpThreads ?? 0}`;
    if (feed === 'inputs' && !this.noInputs.has(key) && canWiden(pool)) {
      const t0 = performance.now();
      const resident = await this.residentFor(key, pool, graphs, options);
      const t1 = performance.now();
      if (resident) {
        await mergeIntoWidened(pool, weighting, resident.arrays, signal, options.mergeThreads);
        const t2 = performance.now();
        this.busy = true;
        try {
          const value = await use({ session: resident.session, io: resident.io, weights: resident.weights });
          return { value, timings: { mergeMs: t2 - t1, sessionMs: t1 - t0 }, weightFeed: 'inputs' };
        } finally {
          this.busy = false;
          if (this.closed) await this.releaseResident();
        }
      }
    }
    await this.releaseResident(); // its memory is the merge buffers' to use now
    const t0 = performance.now();
    const merged = await mergeInto(pool, weighting, this.partBuffers(pool), signal, options.mergeThreads);
    const t1 = performance.now();
    const { graph, io } = graphs.for(options.provider);
    const session = await createMergedSession(graph, merged, options.provider, options.intraOpThreads);
    const t2 = performance.now();
    try {
      return { value: await use({ session, io }), timings: { mergeMs: t1 - t0, sessionMs: t2 - t1 }, weightFeed: 'initializers' };
    } finally {
      await session.release();
    }
  }

  /** Releases what is kept; a session still evaluating is released when its trial ends (never under a run). */
  async close(): Promise<void> {
    this.closed = true;
    this.parts = [];
    if (!this.busy) await this.releaseResident();
  }

  /** The pool's resident session, made on first use; null when ONNX Runtime refuses the graph that way. */
  private async residentFor(key: string, pool: Pool, graphs: ProviderGraphs, options: TrialSessionOptions): Promise<Resident | null> {
    if (this.resident?.key === key) return this.resident;
    await this.releaseResident();
    this.parts = []; // the merge buffers' memory is the weight arrays' to use now
    const { graph, io } = graphs.withWeightInputs(pool.manifest.tensors);
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(graph.bytes, sessionOptions('cpu', options.intraOpThreads));
    } catch (e) {
      this.noInputs.add(key);
      this.log?.warn(
        { err: (e as Error).message },
        `${pool.label}: ONNX Runtime does not take this graph with its weights as inputs; a session per trial holds them instead`,
      );
      return null;
    }
    const arrays = allocateWidened(pool);
    const weights: Record<string, ort.Tensor> = {};
    for (const t of pool.manifest.tensors) {
      const a = arrays.get(t.name);
      if (a) weights[t.name] = new ort.Tensor('float32', a, t.shape);
    }
    this.resident = { key, session, io, arrays, weights };
    return this.resident;
  }

  private async releaseResident(): Promise<void> {
    const r = this.resident;
    this.resident = undefined;
    await r?.session.release();
  }

  private partBuffers(pool: Pool): Uint8Array[] {
    const parts = weightParts(pool.manifest);
    this.parts.length = Math.min(this.parts.length, parts.length);
    parts.forEach(({ bytes }, i) => {
      if ((this.parts[i]?.length ?? -1) < bytes) {
        this.parts[i] = new Uint8Array(0); // the old one goes before the new one is allocated
        this.parts[i] = new Uint8Array(bytes);
      }
    });
    return this.parts;
  }
}
