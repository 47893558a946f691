// Chooses the accelerator: a probe decides `auto`; `kvm` insists; `tcg` forces emulation.
import { emulationTimeoutFactor } from '../config/defaults.js';
import type { Accel } from '../config/options.js';
import { K3sVmError } from '../errors.js';
import type { Logger } from '../log.js';
import { kvmUdevRule, probeKvmCached, qemuOfRunScript, readCachedProbe } from './accel-probe.js';

export interface ChooseAccelOptions {
  readonly accel: Accel;
  /** Where the probe result is cached for this host boot. */
  readonly cacheDir: string;
  readonly logger: Logger;
  /** The run script whose QEMU is probed; the QEMU on PATH otherwise. */
  readonly runScript?: string | undefined;
}

function kvmUnusable(reason: string): K3sVmError {
  return new K3sVmError('KVM_UNUSABLE', `K3S_VM_ACCEL=kvm, but KVM is not usable: ${reason}`, {
    hint:
      `on a CI runner, enable KVM with the udev rule: ${kvmUdevRule}; on a workstation, enable virtualisation in the firmware ` +
      'and add yourself to the kvm group; or set K3S_VM_ACCEL=tcg to emulate (slow)',
  });
}

/** The accelerator a VM will run under; throws KVM_UNUSABLE when `kvm` is asked for and does not work. */
export async function chooseAccel(options: ChooseAccelOptions): Promise<'kvm' | 'tcg'> {
  if (options.accel === 'tcg') return 'tcg';
  const qemu = options.runScript ? await qemuOfRunScript(options.runScript) : undefined;
  const probe = await probeKvmCached(options.cacheDir, { qemu });
  options.logger.debug(
    `KVM probe (${probe.cached ? 'cached for this host boot' : `${probe.durationMs} ms`}): ${probe.usable ? 'usable' : probe.reason}`,
  );
  if (probe.usable) return 'kvm';
  if (options.accel === 'kvm') throw kvmUnusable(probe.reason);
  options.logger.warn(
    `KVM is not usable (${probe.reason}); falling back to software emulation (TCG), which is many times slower. Timeouts are scaled ×${emulationTimeoutFactor}.`,
  );
  return 'tcg';
}

/**
 * Refuses `kvm` at once when this host boot's cached probe already found KVM unusable, so
 * the refusal comes before a build instead of after it. Runs no probe itself.
 */
export async function refuseKnownDeadKvm(options: Pick<ChooseAccelOptions, 'accel' | 'cacheDir'>): Promise<void> {
  if (options.accel !== 'kvm') return;
  const cached = await readCachedProbe(options.cacheDir);
  if (cached && !cached.usable) throw kvmUnusable(cached.reason);
}
