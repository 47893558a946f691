// Stops a VM: ACPI power-down with a deadline, then QMP quit, then signals — only to our own QEMU.
import { K3sVmError } from '../errors.js';
import type { Logger } from '../log.js';
import { isInstanceQemu, isRunning, waitForExit, waitForExitSync } from '../state/process.js';
import { QmpClient } from './qmp.js';

export interface StopOptions {
  readonly pid: number;
  readonly qmpSocket: string;
  /** How long the guest may take to power off by itself. @default 30_000 */
  readonly gracefulTimeoutMs?: number;
  /** Skip the graceful power-down. @default false */
  readonly force?: boolean;
  readonly logger: Logger;
}

export interface StopResult {
  /** How the VM ended: powered off by the guest, quit through QMP, or killed. */
  readonly how: 'powerdown' | 'quit' | 'signal' | 'already-stopped';
  readonly durationMs: number;
}

export async function stopQemu(options: StopOptions): Promise<StopResult> {
  const started = Date.now();
  const done = (how: StopResult['how']): StopResult => ({ how, durationMs: Date.now() - started });
  if (!isRunning(options.pid)) return done('already-stopped');
  if (!isInstanceQemu(options.pid, options.qmpSocket)) {
    throw new K3sVmError('STATE_INVALID', `process ${options.pid} is not this VM's QEMU; refusing to signal it`, {
      hint: 'the pid file is stale: run stop again to clean the state directory',
    });
  }
  if (!options.force) {
    const timeoutMs = options.gracefulTimeoutMs ?? 30_000;
    try {
      const qmp = await QmpClient.connect(options.qmpSocket);
      try {
        await qmp.execute('system_powerdown');
      } finally {
        qmp.close();
      }
      options.logger.progress(`asked the guest to power off (waiting up to ${Math.round(timeoutMs / 1000)} s)`);
      if (await waitForExit(options.pid, timeoutMs)) return done('powerdown');
      options.logger.warn(`the guest did not power off within ${Math.round(timeoutMs / 1000)} s; stopping QEMU`);
    } catch (error) {
      options.logger.debug(`graceful power-down failed: ${(error as Error).message}`);
    }
  }
  try {
    const qmp = await QmpClient.connect(options.qmpSocket, 1000);
    try {
      await qmp.execute('quit').catch(() => undefined);
    } finally {
      qmp.close();
    }
    if (await waitForExit(options.pid, 3000)) return done('quit');
  } catch (error) {
    options.logger.debug(`QMP quit failed: ${(error as Error).message}`);
  }
  // Check identity again right before signalling: the pid must still be our QEMU.
  if (isRunning(options.pid) && isInstanceQemu(options.pid, options.qmpSocket)) {
    process.kill(options.pid, 'SIGTERM');
    if (!(await waitForExit(options.pid, 3000)) && isInstanceQemu(options.pid, options.qmpSocket)) {
      process.kill(options.pid, 'SIGKILL');
      await waitForExit(options.pid, 3000);
    }
  }
  return done('signal');
}

/**
 * The stop of an exiting process, which has no time for a power-down: SIGTERM to the VM's QEMU
 * (only if the pid is still this instance's QEMU), then up to waitMs for it to go. True when it
 * is gone. Never throws.
 */
export function terminateQemuSync(pid: number, qmpSocket: string, waitMs: number): boolean {
  try {
    if (!isInstanceQemu(pid, qmpSocket)) return !isRunning(pid);
    process.kill(pid, 'SIGTERM');
    return waitForExitSync(pid, waitMs);
  } catch {
    return false;
  }
}
