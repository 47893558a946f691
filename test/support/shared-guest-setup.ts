// Vitest global setup of this repository: one test guest for the whole run, booted through
// k3s-vm's own Vitest adapter (createGlobalSetup), for the tests that only read from a VM.
import type { TestProject } from 'vitest/node';
import { createGlobalSetup } from '../../src/adapters/vitest/index.js';
import { stopCluster } from '../../src/cluster/index.js';
import { qemuProcessesUsing } from './consumer.js';
import type { SharedGuest } from './shared-guest.js';
import { recordingLogger, testGuestOptions } from './test-guest.js';

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  // Vitest gives test.env to the test workers only; the guest's nix-build runs in this process.
  for (const [key, value] of Object.entries(project.config.env ?? {})) process.env[key] ??= String(value);
  const options = testGuestOptions('shared');
  const logger = recordingLogger();
  let teardown: () => Promise<void>;
  try {
    teardown = await createGlobalSetup({ ...options, logger })(project);
  } catch (error) {
    await stopCluster({ dir: options.dir, env: {}, force: true }).catch(() => undefined);
    throw new Error(`the shared test guest did not start; its log:\n  ${logger.lines.slice(-30).join('\n  ')}`, { cause: error });
  }
  const shared: SharedGuest = { options };
  project.provide('sharedGuest', shared);
  return async () => {
    await teardown();
    // The adapter stops what it started: a QEMU left here is a bug in it, not in the test that used it.
    const left = qemuProcessesUsing(options.dir);
    if (left.length > 0) {
      await stopCluster({ dir: options.dir, env: {}, force: true });
      throw new Error(`the Vitest adapter's teardown left the shared test guest running:\n  ${left.join('\n  ')}`);
    }
  };
}
