// Chooses the accelerator: a probe decides `auto`; `kvm` insists; `tcg` forces emulation.
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { emulationTimeoutFactor } from '../config/defaults.js';
import type { Accel } from '../config/options.js';
import { setting } from '../config/names.js';
import { K3sVmError } from '../errors.js';
import type { Logger } from '../log.js';
import { kvmUdevRule, probeKvmCached, readCachedProbe } from './accel-probe.js';

export interface ChooseAccelOptions {
  readonly accel: Accel;
  /** Where the probe result is cached for this host boot. */
  readonly cacheDir: string;
  readonly logger: Logger;
  /** The QEMU to probe (the run script's, src/qemu/tools.ts); the one on PATH otherwise. */
  readonly qemu?: string | undefined;
  /** How the user named the accelerator (the config's names.accel). @default 'K3S_VM_ACCEL' */
  readonly accelName?: string | undefined;
}

function kvmUnusable(reason: string, accelName: string | undefined): K3sVmError {
  const names = accelName === undefined ? {} : { accel: accelName };
  return new K3sVmError('KVM_UNUSABLE', `${setting(names, 'accel', 'kvm')}, but KVM is not usable: ${reason}`, {
    hint:
      `on a CI runner, enable KVM with the udev rule: ${kvmUdevRule}; on a workstation, enable virtualisation in the firmware ` +
      `and add yourself to the kvm group; or set ${setting(names, 'accel', 'tcg')} to emulate (slow)`,
  });
}

/** The accelerator a VM will run under; throws KVM_UNUSABLE when `kvm` is asked for and does not work. */
export async function chooseAccel(options: ChooseAccelOptions): Promise<'kvm' | 'tcg'> {
  if (options.accel === 'tcg') return 'tcg';
  const probe = await probeKvmCached(options.cacheDir, { qemu: options.qemu });
  options.logger.debug(
    `KVM probe (${probe.cached ? 'cached for this host boot' : `${probe.durationMs} ms`}): ${probe.usable ? 'usable' : probe.reason}`,
  );
  if (probe.usable) return 'kvm';
  if (options.accel === 'kvm') throw kvmUnusable(probe.reason, options.accelName);
  options.logger.warn(
    `KVM is not usable (${probe.reason}); falling back to software emulation (TCG), which is many times slower. Timeouts are scaled ×${emulationTimeoutFactor}.`,
  );
  return 'tcg';
}

/**
 * Refuses `kvm` before a build (which can take many minutes) when KVM can be seen not to work
 * without the VM's own QEMU: this host boot's cached probe found it unusable, or, with nothing
 * cached, /dev/kvm is missing or closed to this user, or a QEMU on PATH (where there is one)
 * cannot run guest code under it. Otherwise the probe with the VM's own QEMU follows the build
 * (chooseAccel): hosted CI images have no QEMU on PATH.
 */
export async function refuseKnownDeadKvm(
  options: Pick<ChooseAccelOptions, 'accel' | 'cacheDir' | 'accelName'> & { readonly devKvm?: string; readonly qemu?: string },
): Promise<void> {
  if (options.accel !== 'kvm') return;
  const cached = await readCachedProbe(options.cacheDir);
  if (cached) {
    if (!cached.usable) throw kvmUnusable(cached.reason, options.accelName);
    return;
  }
  const devKvm = options.devKvm ?? '/dev/kvm';
  try {
    await access(devKvm, constants.R_OK | constants.W_OK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw kvmUnusable(
      code === 'ENOENT'
        ? `${devKvm} does not exist (no hardware virtualisation, or the kvm module is not loaded)`
        : `${devKvm} is not accessible to this user (${code})`,
      options.accelName,
    );
  }
  // probeKvmCached does not cache a QEMU that was not found; it caches every other verdict.
  const probe = await probeKvmCached(options.cacheDir, { qemu: options.qemu ?? 'qemu-system-x86_64', devKvm });
  if (!probe.usable && !/was not found$/.test(probe.reason)) throw kvmUnusable(probe.reason, options.accelName);
}
