// Vitest global setup of this repository: one test guest for the whole run, booted through
// k3s-vm's own Vitest adapter (createGlobalSetup), for the tests that only read from a VM; and,
// booted beside it, the consumers' snapshot that consumer runs restore (consumer-snapshot.ts).
import { rmSync } from 'node:fs';
import { dirname } from 'node:path';
import type { TestProject } from 'vitest/node';
import { createGlobalSetup } from '../../src/adapters/vitest/index.js';
import { stopCluster } from '../../src/cluster/index.js';
import { qemuProcessesUsing } from './consumer.js';
import { saveConsumerSnapshot } from './consumer-snapshot.js';
import type { SharedGuest } from './shared-guest.js';
import { recordingLogger, testGuestOptions } from './test-guest.js';

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  // Vitest gives test.env to the test workers only; the guest's nix-build runs in this process.
  for (const [key, value] of Object.entries(project.config.env ?? {})) process.env[key] ??= String(value);
  const options = testGuestOptions('shared');
  const logger = recordingLogger();
  const snapshotLogger = recordingLogger();
  const [guest, template] = await Promise.allSettled([
    createGlobalSetup({ ...options, logger })(project),
    saveConsumerSnapshot(snapshotLogger),
  ]);
  if (guest.status === 'rejected' || template.status === 'rejected') {
    await stopCluster({ dir: options.dir, env: {}, force: true }).catch(() => undefined);
    if (template.status === 'fulfilled') rmSync(dirname(template.value), { recursive: true, force: true });
    if (guest.status === 'rejected')
      throw new Error(`the shared test guest did not start; its log:\n  ${logger.lines.slice(-30).join('\n  ')}`, { cause: guest.reason });
    throw new Error(`the consumers' snapshot was not saved; its log:\n  ${snapshotLogger.lines.slice(-30).join('\n  ')}`, {
      cause: (template as PromiseRejectedResult).reason,
    });
  }
  const teardown = guest.value;
  const shared: SharedGuest = { options };
  project.provide('sharedGuest', shared);
  project.provide('consumerSnapshot', template.value);
  return async () => {
    rmSync(dirname(template.value), { recursive: true, force: true });
    await teardown();
    // The adapter stops what it started: a QEMU left here is a bug in it, not in the test that used it.
    const left = qemuProcessesUsing(options.dir);
    if (left.length > 0) {
      await stopCluster({ dir: options.dir, env: {}, force: true });
      throw new Error(`the Vitest adapter's teardown left the shared test guest running:\n  ${left.join('\n  ')}`);
    }
  };
}
