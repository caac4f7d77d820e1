import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/helpers/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // ONNX Runtime and training are CPU-bound: two forks match the 2-core CI machines
    pool: 'forks',
    maxWorkers: 2,
  },
});
