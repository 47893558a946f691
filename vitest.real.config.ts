// The tests on the real-Kubernetes test guest (fixtures/test-guest/real-kubernetes.nix): the
// examples and test/real/, on one real guest booted once (test/real/setup.ts). npm test runs
// them after the fast suite (vitest.config.ts), so the two never share the two cores.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineConfig } from 'vitest/config';
import { LastIsRestore } from './test/real/sequencer.ts';

const cacheHome = mkdtempSync(join(tmpdir(), 'k3s-vm-test-cache-'));

export default defineConfig({
  test: {
    include: ['test/real/**/*.test.ts', 'examples/*.test.ts'],
    globalSetup: ['test/real/setup.ts'],
    testTimeout: 240_000,
    hookTimeout: 600_000,
    // One file at a time: the guest's two emulated CPUs are the limit, not the host's workers;
    // test/real/sequencer.ts runs the file that stops and restores the guest last.
    fileParallelism: false,
    sequence: { sequencer: LastIsRestore },
    reporters: ['default'],
    env: {
      NIX_CONFIG: 'substituters =',
      XDG_CACHE_HOME: cacheHome,
    },
  },
});
