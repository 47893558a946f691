import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // The VM tests boot real QEMU guests under software emulation: give them room, and run
    // the heavy files one at a time so two cores are not oversubscribed.
    testTimeout: 180_000,
    hookTimeout: 240_000,
    fileParallelism: false,
    reporters: ['default'],
    env: {
      // The test guest is built from local files only: do not wait on binary caches this
      // host may not reach. (The real-VM test restores Nix's own setting.)
      NIX_CONFIG: 'substituters =',
    },
  },
});
