// Ending one user's hold on the VM: the last user of an unkept VM stops it.
import type { Logger } from '../log.js';
import type { InstanceDir } from '../state/instance-dir.js';
import { liveLeases, type Lease } from '../state/leases.js';
import { withLock } from '../state/lock.js';
import { deriveStatus } from '../state/status.js';
import { stopLockTimeoutMs } from './prepare.js';
import { stopInstance } from './stop.js';

/** Drops the lease; stops the VM if nobody else uses it and it is not kept. */
export async function releaseLease(dir: InstanceDir, lease: Lease, logger: Logger): Promise<{ stoppedVm: boolean }> {
  return withLock(dir, { timeoutMs: stopLockTimeoutMs }, async () => {
    await lease.release();
    const status = await deriveStatus(dir);
    if (status.state !== 'running' || !status.runtime) return { stoppedVm: false };
    if (status.runtime.keep) {
      logger.progress(`leaving the VM running (kept; pid ${status.pid}); stop it with: npx k3s-vm stop`);
      return { stoppedVm: false };
    }
    const others = await liveLeases(dir);
    if (others.length > 0) {
      logger.progress(`leaving the VM running for ${others.length} other run(s)`);
      return { stoppedVm: false };
    }
    await stopInstance(dir, status, logger, false);
    return { stoppedVm: true };
  });
}
