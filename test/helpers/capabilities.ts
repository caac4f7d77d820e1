import type { WorkerCapabilities } from '../../shared/index.js';

/** What a plain CPU worker advertises, with `over` changed. */
export const testCapabilities = (over: Partial<WorkerCapabilities> = {}): WorkerCapabilities => ({
  provider: 'cpu',
  deviceName: 'test',
  memoryGb: 8,
  concurrency: 1,
  trialsPerMinute: 0,
  tokensPerSecond: 0,
  onlyWhenIdle: false,
  gpuIdle: true,
  studies: [],
  departments: [],
  ...over,
});
