import ort from 'onnxruntime-node';
import { type ExecutionProvider, OptimerError, WEIGHTS_LOCATION } from '../../shared/index.js';

const CUDA_HINT =
  "the CUDA provider is not installed: on a GPU worker run 'ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node' " +
  '(or copy the provider libraries in; see README, GPU workers)';

/**
 * An inference session for the pool's graph with merged weights supplied from memory as its
 * external data: no model file is written per trial.
 */
export async function createMergedSession(
  graph: Uint8Array,
  weights: Uint8Array,
  provider: ExecutionProvider,
): Promise<ort.InferenceSession> {
  try {
    return await ort.InferenceSession.create(graph, {
      executionProviders: [provider],
      graphOptimizationLevel: 'all',
      externalData: [{ path: WEIGHTS_LOCATION, data: weights }],
    });
  } catch (e) {
    const msg = (e as Error).message;
    const hint = provider === 'cuda' && /cuda|provider|shared library/i.test(msg) ? ` (${CUDA_HINT})` : '';
    // a missing CUDA provider is this machine's problem, not the trial's: another worker may run it
    throw new OptimerError('RUNTIME', `cannot create an ONNX Runtime session on ${provider}: ${msg}${hint}`, { cause: e, retryable: true });
  }
}

/** A session for a model file on disk (a checkpoint, an exported merge). */
export async function createFileSession(path: string, provider: ExecutionProvider): Promise<ort.InferenceSession> {
  try {
    return await ort.InferenceSession.create(path, { executionProviders: [provider], graphOptimizationLevel: 'all' });
  } catch (e) {
    throw new OptimerError('RUNTIME', `${path}: cannot create an ONNX Runtime session on ${provider}: ${(e as Error).message}`, {
      cause: e,
    });
  }
}
