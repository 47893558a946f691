// Vitest global setup of the real-Kubernetes tests (vitest.real.config.ts): one real guest for
// the run, booted through k3s-vm's own Vitest adapter with a ready-state snapshot saved, for
// the examples and test/real/. Where the guest cannot run, the tests skip with the reason;
// under CI (CI=true) that is a failure instead, so a missing install step cannot hide.
import type { TestProject } from 'vitest/node';
import { createGlobalSetup } from '../../src/adapters/vitest/index.js';
import { stopCluster } from '../../src/cluster/index.js';
import { qemuProcessesUsing } from '../support/consumer.js';
import { realGuestUnavailable, suiteRealGuestOptions } from '../support/real-guest.js';
import type { RealGuest } from '../support/real-cluster.js';
import { recordingLogger } from '../support/test-guest.js';

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  for (const [key, value] of Object.entries(project.config.env ?? {})) process.env[key] ??= String(value);
  const unavailable = realGuestUnavailable();
  if (unavailable) {
    if (process.env['CI'] === 'true')
      throw new Error(`the real-Kubernetes test guest cannot run, and under CI its tests may not be skipped: ${unavailable}`);
    process.stderr.write(`real-Kubernetes tests skipped: ${unavailable}\n`);
    project.provide('realGuest', { unavailable });
    return async () => undefined;
  }
  // A state directory that outlives the run, with snapshots on: the first run boots and saves the
  // ready cluster, later runs restore it (the snapshot is keyed by the build, so a change to the
  // guest boots again). The restore is what a kept-snapshot user gets; test/real/snapshot.test.ts
  // checks both paths' outcome. Stopped at the end of each run, as any unkept VM.
  const options = suiteRealGuestOptions();
  const logger = recordingLogger();
  const started = Date.now();
  let teardown: () => Promise<void>;
  try {
    teardown = await createGlobalSetup({ ...options, logger })(project);
  } catch (error) {
    await stopCluster({ dir: options.dir, env: {}, force: true }).catch(() => undefined);
    throw new Error(`the real-Kubernetes test guest did not start; its log:\n  ${logger.lines.slice(-40).join('\n  ')}`, { cause: error });
  }
  process.stderr.write(`real-Kubernetes test guest ready in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  const guest: RealGuest = { options, bootLog: logger.lines };
  project.provide('realGuest', guest);
  return async () => {
    await teardown();
    const left = qemuProcessesUsing(options.dir);
    if (left.length > 0) {
      await stopCluster({ dir: options.dir, env: {}, force: true });
      throw new Error(`the Vitest adapter's teardown left the real guest running:\n  ${left.join('\n  ')}`);
    }
  };
}
