// Ending one user's hold on the VM: the last user of an unkept VM stops it. The rule is written
// once (releaseOutcome) and applied twice: by stop() with a graceful power-down, and by the
// exit work of a process that ends without calling it, with only a signal.
import { readFileSync } from 'node:fs';
import type { Logger } from '../log.js';
import { terminateQemuSync } from '../qemu/stop.js';
import { files } from '../state/files.js';
import type { InstanceDir } from '../state/instance-dir.js';
import { dropLeaseSync, liveLeases, otherLiveLeaseCountSync, removeRuntimeFilesSync, type Lease } from '../state/leases.js';
import { withLock } from '../state/lock.js';
import { isInstanceQemu } from '../state/process.js';
import { deriveStatus, type RuntimeRecord } from '../state/status.js';
import { stopLockTimeoutMs } from './prepare.js';
import { stopInstance } from './stop.js';

/** What a released hold leaves: the VM stopped, or running because it is kept or others use it. */
export type ReleaseOutcome = 'stop' | 'kept' | 'others';

/** The rule: a running VM stops when its last user lets go, unless it is kept. */
export function releaseOutcome(vm: { readonly keep: boolean }, otherUsers: number): ReleaseOutcome {
  if (vm.keep) return 'kept';
  return otherUsers > 0 ? 'others' : 'stop';
}

/** Drops the lease; stops the VM if nobody else uses it and it is not kept. */
export async function releaseLease(dir: InstanceDir, lease: Lease, logger: Logger): Promise<{ stoppedVm: boolean }> {
  return withLock(dir, { timeoutMs: stopLockTimeoutMs }, async () => {
    await lease.release();
    const status = await deriveStatus(dir);
    if (status.state !== 'running' || !status.runtime) return { stoppedVm: false };
    const others = status.runtime.keep ? [] : await liveLeases(dir);
    switch (releaseOutcome(status.runtime, others.length)) {
      case 'kept':
        logger.progress(`leaving the VM running (kept; pid ${status.pid}); stop it with: npx k3s-vm stop`);
        return { stoppedVm: false };
      case 'others':
        logger.progress(`leaving the VM running for ${others.length} other run(s)`);
        return { stoppedVm: false };
      case 'stop':
        await stopInstance(dir, status, logger, false);
        return { stoppedVm: true };
    }
  });
}

/**
 * The same release as exit work (a runner that calls process.exit on Ctrl-C leaves no time for
 * more): drop the lease, and if the rule says stop, SIGTERM the VM's QEMU and remove its files
 * once it is gone. Never throws; the next run cleans whatever is left.
 */
export function releaseLeaseAtExit(dir: InstanceDir, leaseId: string): void {
  dropLeaseSync(dir, leaseId);
  let runtime: RuntimeRecord;
  try {
    runtime = JSON.parse(readFileSync(dir.file(files.runtime), 'utf8')) as RuntimeRecord;
  } catch {
    return;
  }
  if (!isInstanceQemu(runtime.pid, runtime.qmpSocket)) return;
  if (releaseOutcome(runtime, otherLiveLeaseCountSync(dir)) !== 'stop') return;
  // Files of a QEMU that outlives the wait stay, so the next run still finds and stops it.
  if (terminateQemuSync(runtime.pid, runtime.qmpSocket, 2000)) removeRuntimeFilesSync(dir, runtime.qmpSocket);
}
