// The tests on the real-Kubernetes test guest (fixtures/test-guest/real-kubernetes.nix): the
// examples and test/real/, on one real guest restored or booted once (test/real/setup.ts). npm
// test runs them after the fast suite (vitest.config.ts), so the two never share the two cores.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineConfig } from 'vitest/config';

const cacheHome = mkdtempSync(join(tmpdir(), 'k3s-vm-test-cache-'));

/** Stops, restores and rewinds the guest under everyone's feet: runs alone, after the rest. */
const restoring = 'test/real/snapshot.test.ts';

export default defineConfig({
  test: {
    globalSetup: ['test/real/setup.ts'],
    testTimeout: 240_000,
    hookTimeout: 600_000,
    // One file at a time: the guest's two emulated CPUs are the limit (two files at once took
    // 308 s against 341 s, and a diagnostics read then missed its 1.5 s budget).
    fileParallelism: false,
    reporters: ['default'],
    env: {
      NIX_CONFIG: 'substituters =',
      XDG_CACHE_HOME: cacheHome,
    },
    // Groups 1 and 2, not 0: Vitest runs one-at-a-time files of group 0 after every numbered group.
    projects: [
      {
        extends: true,
        test: {
          name: 'real',
          include: ['test/real/**/*.test.ts', 'examples/*.test.ts'],
          exclude: [restoring],
          sequence: { groupOrder: 1 },
        },
      },
      { extends: true, test: { name: 'real-restore', include: [restoring], sequence: { groupOrder: 2 } } },
    ],
  },
});
