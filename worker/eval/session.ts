import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import ort from 'onnxruntime-node';
import { type ExecutionProvider, OptimerError, partName } from '../../shared/index.js';
import { LossGraph, toLossGraph } from './loss-graph.js';

const CUDA_HINT =
  "the CUDA provider is not installed: on a GPU worker run 'ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node' " +
  '(or copy the provider libraries in; see README, GPU workers)';

/** Why a session could not be created, with what to do where we know it. */
function hint(provider: ExecutionProvider, msg: string): string {
  if (provider === 'cuda' && /cuda|provider|shared library/i.test(msg)) return ` (${CUDA_HINT})`;
  if (provider === 'cpu' && /Could not find an implementation for/.test(msg)) {
    return ' (the CPU provider lacks this kernel, as it lacks most float16 and bfloat16 ones: evaluate on cuda, or export in float32)';
  }
  return '';
}

/** The options of every session a worker evaluates with. */
export function sessionOptions(provider: ExecutionProvider, intraOpThreads?: number): ort.InferenceSession.SessionOptions {
  return {
    executionProviders: [provider],
    graphOptimizationLevel: 'all',
    ...(intraOpThreads ? { intraOpNumThreads: intraOpThreads } : {}),
  };
}

/**
 * An inference session for the pool's graph with merged weights supplied from memory as its
 * external data: no model file is written per trial. `graph` is the loss graph (toLossGraph,
 * built once per study); the pool's graph as stored is transformed first. `weights` holds one
 * buffer per part of the pool's layout (mergeInto), part i supplied as external data `partName(i)`.
 */
export async function createMergedSession(
  graph: LossGraph | Uint8Array,
  weights: readonly Uint8Array[],
  provider: ExecutionProvider,
  intraOpThreads?: number,
): Promise<ort.InferenceSession> {
  const loss = graph instanceof LossGraph ? graph : toLossGraph(graph);
  try {
    return await ort.InferenceSession.create(loss.bytes, {
      ...sessionOptions(provider, intraOpThreads),
      externalData: weights.map((data, i) => ({ path: partName(i), data })),
    });
  } catch (e) {
    const msg = (e as Error).message;
    // a missing CUDA provider is this machine's problem, not the trial's: another worker may run it
    throw new OptimerError('RUNTIME', `cannot create an ONNX Runtime session on ${provider}: ${msg}${hint(provider, msg)}`, {
      cause: e,
      retryable: true,
    });
  }
}

/**
 * A session for a model file on disk (a checkpoint, an exported merge), of its loss graph:
 * `logits` names the logits output (default 'logits', or the only output). External data files
 * resolve beside the model, read by ONNX Runtime itself.
 */
export async function createFileSession(path: string, provider: ExecutionProvider, logits?: string): Promise<ort.InferenceSession> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new OptimerError('BAD_ONNX', `${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { cause: e });
  }
  const loss = toLossGraph(bytes, { logits, where: path });
  try {
    return await ort.InferenceSession.create(loss.bytes, {
      executionProviders: [provider],
      graphOptimizationLevel: 'all',
      // from bytes, ONNX Runtime resolves external data against this folder (and only inside it)
      extra: { session: { model_external_initializers_file_folder_path: dirname(resolve(path)) } },
    });
  } catch (e) {
    const msg = (e as Error).message;
    throw new OptimerError('RUNTIME', `${path}: cannot create an ONNX Runtime session on ${provider}: ${msg}${hint(provider, msg)}`, {
      cause: e,
    });
  }
}
