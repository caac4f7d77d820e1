import ort from 'onnxruntime-node';
import {
  type ExecutionProvider,
  isOptimerError,
  type Logger,
  type Pool,
  type TensorWeighting,
  type WeightFeed,
  weightParts,
} from '../../shared/index.js';
import { allocateWidened, canWiden, mergeInto, mergeIntoWidened } from '../merge/merge.js';
import { createMergedSession, sessionOptions } from './session.js';
import type { LmIo } from './session-model.js';
import type { ProviderGraphs } from './widen.js';

/*
 * How a trial's merged weights reach ONNX Runtime (WeightFeed):
 *  - `inputs` (the CPU default): the weights are float32 graph inputs of one session per pool,
 *    which wraps arrays the merge writes into: no session per trial, no copy of the weights, no
 *    float32 copies of 16-bit ones. ONNX Runtime packs each MatMul's weights at every batch instead
 *    of once per session: +6% to +46% of a forward pass in the README's runs (one trial), the more
 *    the fewer tokens a batch has.
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
  /** session creation: about 0 when a pool's session is reused */
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
  /** pools (by key) whose weights cannot be inputs, with why */
  private readonly noInputs = new Map<string, string>();
  /** a trial is using the resident session (made, merged into, evaluated): close() leaves releasing it to that trial */
  private busy = false;
  private closed = false;

  constructor(private readonly log?: Logger) {}

  /**
   * Merges `weighting`, runs `use` on a session holding the result, releases what is not kept.
   * `note` says why a trial asked to take its weights as inputs took them as initializers.
   */
  async run<T>(
    pool: Pool,
    graphs: ProviderGraphs,
    weighting: TensorWeighting,
    options: TrialSessionOptions,
    use: (s: TrialSession) => Promise<T>,
    signal?: AbortSignal,
  ): Promise<{ value: T; timings: TrialTimings; weightFeed: WeightFeed; note?: string }> {
    const feed = options.provider === 'cpu' ? (options.weightFeed ?? 'inputs') : 'initializers';
    // the graph, what the loss graph reads (the model's inputs and logits) and the thread count
    const key = `${pool.manifest.graph.sha256}:${JSON.stringify(pool.manifest.model)}:${options.intraOpThreads ?? 0}`;
    if (feed === 'inputs' && !this.noInputs.has(key)) {
      if (!canWiden(pool)) this.refuse(key, pool, 'it has float64 weights, which float32 inputs cannot hold');
      else {
        const r = await this.asInputs(key, { pool, graphs, weighting, options, use, signal });
        if (r) return r;
      }
    }
    const note = feed === 'inputs' ? this.noInputs.get(key) : undefined;
    await this.releaseResident(); // its memory is the merge buffers' to use now
    const t0 = performance.now();
    const merged = await mergeInto(pool, weighting, this.partBuffers(pool), signal, options.mergeThreads);
    const t1 = performance.now();
    const { graph, io } = graphs.for(options.provider);
    const session = await createMergedSession(graph, merged, options.provider, options.intraOpThreads);
    const t2 = performance.now();
    try {
      const value = await use({ session, io });
      return { value, timings: { mergeMs: t1 - t0, sessionMs: t2 - t1 }, weightFeed: 'initializers', ...(note ? { note } : {}) };
    } finally {
      await session.release();
    }
  }

  /** Releases what is kept; a session in use is released when its trial ends (never under a run). */
  async close(): Promise<void> {
    this.closed = true;
    this.parts = [];
    if (!this.busy) await this.releaseResident();
  }

  /**
   * The trial on the pool's resident session; null when this pool's weights cannot be inputs
   * (then recorded, and the caller evaluates with initializers). A trial that fails inside ONNX
   * Runtime on a session just made is taken as the graph's failure, not the trial's: the
   * caller runs it again with initializers.
   */
  private async asInputs<T>(
    key: string,
    trial: {
      pool: Pool;
      graphs: ProviderGraphs;
      weighting: TensorWeighting;
      options: TrialSessionOptions;
      use: (s: TrialSession) => Promise<T>;
      signal: AbortSignal | undefined;
    },
  ): Promise<{ value: T; timings: TrialTimings; weightFeed: WeightFeed } | null> {
    const { pool, graphs, weighting, options, use, signal } = trial;
    this.busy = true;
    try {
      const t0 = performance.now();
      const fresh = this.resident?.key !== key;
      const resident = await this.residentFor(key, pool, graphs, options);
      if (!resident) return null;
      const t1 = performance.now();
      await mergeIntoWidened(pool, weighting, resident.arrays, signal, options.mergeThreads);
      const t2 = performance.now();
      try {
        const value = await use({ session: resident.session, io: resident.io, weights: resident.weights });
        return { value, timings: { mergeMs: t2 - t1, sessionMs: t1 - t0 }, weightFeed: 'inputs' };
      } catch (e) {
        if (!fresh || this.closed || signal?.aborted || !isOptimerError(e) || e.code !== 'RUNTIME') throw e;
        this.refuse(key, pool, `ONNX Runtime failed on its first batch with the weights as inputs: ${(e as Error).message}`);
        await this.releaseResident();
        return null;
      }
    } finally {
      this.busy = false;
      if (this.closed) await this.releaseResident();
    }
  }

  /** The pool's resident session, made on first use; null when it cannot be made (recorded). */
  private async residentFor(key: string, pool: Pool, graphs: ProviderGraphs, options: TrialSessionOptions): Promise<Resident | null> {
    if (this.resident?.key === key) return this.resident;
    await this.releaseResident();
    this.parts = []; // the merge buffers' memory is the weight arrays' to use now
    let arrays: Map<string, Float32Array>;
    try {
      arrays = allocateWidened(pool); // before the session: a failure here leaves nothing to release
    } catch (e) {
      this.refuse(key, pool, `its float32 weights do not fit in memory (${(e as Error).message})`);
      return null;
    }
    const { graph, io } = graphs.withWeightInputs(pool.manifest.tensors);
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(graph.bytes, sessionOptions('cpu', options.intraOpThreads));
    } catch (e) {
      this.refuse(key, pool, `ONNX Runtime does not take its graph with the weights as inputs: ${(e as Error).message}`);
      return null;
    }
    const weights: Record<string, ort.Tensor> = {};
    for (const t of pool.manifest.tensors) {
      const a = arrays.get(t.name);
      if (a) weights[t.name] = new ort.Tensor('float32', a, t.shape);
    }
    this.resident = { key, session, io, arrays, weights };
    return this.resident;
  }

  /** Records (and says once) why this pool's weights are not inputs: its trials take initializers. */
  private refuse(key: string, pool: Pool, why: string): void {
    if (this.noInputs.has(key)) return;
    this.noInputs.set(key, why);
    this.log?.warn({ pool: pool.label }, `${pool.label}: the weights are not fed as inputs, a session per trial holds them: ${why}`);
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
