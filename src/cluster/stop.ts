// Stopping the VM: the one way every operation stops QEMU and clears what it leaves behind.
import { rm } from 'node:fs/promises';
import { stopQemu, type StopResult } from '../qemu/stop.js';
import { runtimeFiles } from '../state/files.js';
import type { InstanceDir } from '../state/instance-dir.js';
import { clearLeases } from '../state/leases.js';
import { withLock } from '../state/lock.js';
import { deriveStatus, qmpSocketPath, type InstanceStatus } from '../state/status.js';
import type { Logger } from '../log.js';
import type { ClusterOptions } from './options.js';
import { prepare, stopLockTimeoutMs } from './prepare.js';

export interface StopClusterResult {
  /** What was running before. */
  readonly previous: InstanceStatus['state'];
  readonly stop: StopResult | undefined;
}

/** Stops the VM whoever started it (graceful power-down, then forced), and cleans a broken state. */
export async function stopCluster(options: ClusterOptions & { force?: boolean } = {}): Promise<StopClusterResult> {
  const { dir, logger } = await prepare(options);
  return withLock(dir, { timeoutMs: stopLockTimeoutMs, signal: options.signal }, async () => {
    const status = await deriveStatus(dir);
    if (status.state === 'stopped') return { previous: 'stopped', stop: undefined };
    if (status.state === 'broken') logger.warn(`cleaning up: ${status.reasons.join('; ')}`);
    const stop = await stopInstance(dir, status, logger, options.force ?? false);
    return { previous: status.state, stop };
  });
}

/**
 * Stops the instance's QEMU if it runs (only ever our own QEMU), then removes the runtime
 * files and leases. The disk, keys and build stay. Call it holding the lock.
 */
export async function stopInstance(
  dir: InstanceDir,
  status: InstanceStatus,
  logger: Logger,
  force: boolean,
): Promise<StopResult | undefined> {
  const qmpSocket = status.runtime?.qmpSocket ?? qmpSocketPath(dir);
  let result: StopResult | undefined;
  if (status.pid !== undefined) {
    logger.progress(`stopping the VM (pid ${status.pid})`);
    result = await stopQemu({ pid: status.pid, qmpSocket, force, logger });
    logger.progress(`stopped the VM (${result.how}, ${(result.durationMs / 1000).toFixed(1)} s)`);
  }
  for (const name of runtimeFiles) await dir.remove(name);
  await rm(qmpSocket, { force: true });
  await clearLeases(dir);
  return result;
}
