// The first step of scripts/e2e.sh: a host without working KVM stops here, before anything is built,
// with the KVM_UNUSABLE error a start with K3S_VM_ACCEL=kvm gives before its build (src/qemu/accel.ts).
import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/config/resolve-config.js';
import { isK3sVmError } from '../../src/errors.js';
import { refuseKnownDeadKvm } from '../../src/qemu/accel.js';
import { repoRoot } from '../support/test-guest.js';

describe('KVM', () => {
  it('is usable here as far as can be told before the build (the VM’s own QEMU is probed after it)', async () => {
    const env = { HOME: process.env['HOME'], XDG_CACHE_HOME: process.env['XDG_CACHE_HOME'] };
    const { cacheDir } = resolveConfig({ projectRoot: repoRoot }, env);
    const refused = await refuseKnownDeadKvm({ accel: 'kvm', cacheDir }).then(
      () => undefined,
      (error: unknown) => error,
    );
    if (isK3sVmError(refused)) console.error(`${refused.code}: ${refused.message}\nhint: ${refused.hint ?? ''}`);
    expect(refused).toBeUndefined();
  });
});
