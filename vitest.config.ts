import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineConfig } from 'vitest/config';

// One cache directory per run: the KVM probe runs once and is shared by every test file, and
// nothing is written into the developer's ~/.cache.
const cacheHome = mkdtempSync(join(tmpdir(), 'k3s-vm-test-cache-'));

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // One test guest for the tests that only read from a VM (test/helpers/shared-guest.ts).
    globalSetup: ['test/helpers/shared-guest-setup.ts'],
    // The VM tests boot real QEMU guests under software emulation: give them room.
    testTimeout: 180_000,
    hookTimeout: 240_000,
    // Two files at a time: most of a VM test is waiting (SSH handshakes, runner start-ups), so
    // a second file fills the idle core; more than two would oversubscribe the emulated guests.
    fileParallelism: true,
    maxWorkers: 2,
    reporters: ['default'],
    env: {
      // The test guest is built from local files only: do not wait on binary caches this
      // host may not reach. (The real-VM test restores Nix's own setting.)
      NIX_CONFIG: 'substituters =',
      XDG_CACHE_HOME: cacheHome,
    },
  },
});
