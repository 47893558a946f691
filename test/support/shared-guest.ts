// The run's shared test guest (test/support/shared-guest-setup.ts) as a test file sees it.
// Tests that use it only read: they never stop, restart or reconfigure it.
import { inject } from 'vitest';
import type { ProvidedCluster } from '../../src/adapters/vitest/index.js';
import { startCluster, type StartedCluster, type StartOptions } from '../../src/cluster/index.js';

export interface SharedGuest {
  /** The options it was started with (plain data); attaching with anything else would restart it. */
  readonly options: StartOptions & { dir: string };
}

declare module 'vitest' {
  export interface ProvidedContext {
    /** The shared test guest of this run (vitest.config.ts globalSetup). */
    sharedGuest: SharedGuest;
  }
}

/** The shared guest's options and what the Vitest adapter provided for it. */
export function sharedGuest(): SharedGuest & { provided: ProvidedCluster } {
  const shared = inject('sharedGuest');
  const provided = inject('k3sVm');
  if (!shared || !provided)
    throw new Error('no shared test guest: vitest.config.ts must list test/support/shared-guest-setup.ts in globalSetup');
  return { ...shared, provided };
}

/**
 * Attaches to the shared guest as a second user (it is not booted again); `stop()` on the
 * result releases only this hold.
 */
export function attachSharedGuest(extra: Pick<StartOptions, 'logger'> = {}): Promise<StartedCluster> {
  return startCluster({ ...sharedGuest().options, ...extra });
}
