import { defineConfig } from 'vitest/config';

/** The native kernels' test alone, without the global set-up (no CLI build, no family): for a child run under another SIMD path. */
export default defineConfig({
  test: {
    include: ['test/native-kernels.test.ts'],
    testTimeout: 60_000,
    pool: 'forks',
    maxWorkers: 1,
  },
});
