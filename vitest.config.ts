import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 300_000,
    // End-to-end tests drive real Nix stores and servers; two cores, so keep files from starving each other.
    maxWorkers: 2,
  },
});
