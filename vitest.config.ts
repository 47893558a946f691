import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configDefaults, defineConfig } from 'vitest/config';
import { LongestFirst } from './test/support/long-first.ts';

// One cache directory per run: the KVM probe runs once and is shared by every test file, and
// nothing is written into the developer's ~/.cache.
const cacheHome = mkdtempSync(join(tmpdir(), 'k3s-vm-test-cache-'));

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // On the real-Kubernetes test guest: vitest.real.config.ts, run after this suite by npm test.
    // test/e2e/kvm.test.ts is scripts/e2e.sh's first step, which fails where KVM does not work.
    exclude: [...configDefaults.exclude, 'test/real/**', 'test/e2e/kvm.test.ts'],
    // One test guest for the tests that only read from a VM (test/support/shared-guest.ts).
    globalSetup: ['test/support/shared-guest-setup.ts'],
    // The VM tests boot real QEMU guests under software emulation: give them room.
    testTimeout: 180_000,
    hookTimeout: 240_000,
    // Three files at a time on two cores: much of a VM test is waiting (SSH handshakes, runner
    // start-ups, graceful power-downs, readiness deadlines), which a third file fills (the suite
    // took 253 s with two, 214 s with three, the cores then 94 % busy). Tests therefore give
    // emulated boots room: no deadline assumes a guest boots at its unloaded speed.
    fileParallelism: true,
    // Two since the suite grew: with three, boots beside each other slowed past the tests'
    // deadlines (a boot reached step 4 only after 90 s).
    maxWorkers: 2,
    sequence: { sequencer: LongestFirst },
    reporters: ['default'],
    env: {
      // The test guest is built from local files only: do not wait on binary caches this
      // host may not reach. (The real-VM test restores Nix's own setting.)
      NIX_CONFIG: 'substituters =',
      XDG_CACHE_HOME: cacheHome,
    },
  },
});
