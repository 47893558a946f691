// Reset: delete the VM's disk (the cluster's state); keys and build stay.
import { K3sVmError } from '../errors.js';
import { files } from '../state/files.js';
import { withLock } from '../state/lock.js';
import { deriveStatus } from '../state/status.js';
import type { ClusterOptions } from './options.js';
import { prepare, stopLockTimeoutMs } from './prepare.js';
import { stopInstance } from './stop.js';

/** Deletes the disk. Refuses while the VM runs unless forced, in which case it stops it first. */
export async function resetCluster(
  options: ClusterOptions & { force?: boolean } = {},
): Promise<{ stoppedVm: boolean; deletedDisk: boolean }> {
  const { dir, logger } = await prepare(options);
  return withLock(dir, { timeoutMs: stopLockTimeoutMs, signal: options.signal }, async () => {
    const status = await deriveStatus(dir);
    let stoppedVm = false;
    if (status.state !== 'stopped') {
      if (status.state === 'running' && !options.force) {
        throw new K3sVmError('STILL_RUNNING', `the VM is running (pid ${status.pid}); reset would delete its disk under it`, {
          hint: 'stop it first (k3s-vm stop), or reset with --force to stop it and reset',
        });
      }
      await stopInstance(dir, status, logger, true);
      stoppedVm = status.state === 'running';
    }
    const deletedDisk = dir.exists(files.disk);
    await dir.remove(files.disk);
    await dir.remove(files.diskRecord);
    // The snapshots live inside the disk: their records go with it.
    await dir.remove(files.snapshotRecord);
    await dir.remove(files.snapshotsDir);
    await dir.remove(files.tmpDir);
    logger.progress(
      deletedDisk
        ? `deleted the VM's disk ${dir.file(files.disk)}; the next start begins with a fresh cluster`
        : 'there was no disk to delete',
    );
    return { stoppedVm, deletedDisk };
  });
}
