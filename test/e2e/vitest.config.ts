// The real-VM suite (scripts/e2e.sh): no test guest, so none of the root config's global setup,
// which builds and boots fixtures/test-guest whatever files are asked for.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    root: import.meta.dirname,
    include: ['*.test.ts'],
    // A first build downloads the NixOS closure and K3s's images; the examples boot the VM twice.
    testTimeout: 60 * 60_000,
    hookTimeout: 10 * 60_000,
    fileParallelism: false,
    reporters: ['default'],
  },
});
