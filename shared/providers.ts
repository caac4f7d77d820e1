/** The ONNX Runtime execution providers a worker can evaluate on. */
export const EXECUTION_PROVIDERS = ['cpu', 'cuda', 'webgpu'] as const;
export type ExecutionProvider = (typeof EXECUTION_PROVIDERS)[number];

export function isExecutionProvider(value: string): value is ExecutionProvider {
  return (EXECUTION_PROVIDERS as readonly string[]).includes(value);
}

/**
 * How a trial's merged weights reach ONNX Runtime: as graph inputs of one session per pool (the
 * CPU default) or as the initializers of a session per trial (elsewhere). worker/eval/trial-session.ts says why.
 */
export const WEIGHT_FEEDS = ['inputs', 'initializers'] as const;
export type WeightFeed = (typeof WEIGHT_FEEDS)[number];
