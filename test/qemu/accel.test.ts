// Choosing the accelerator: the probe decides `auto`, `kvm` insists, `tcg` forces emulation.
// The probe result is seeded in a cache directory of the test's own, so every branch runs on every host.
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { currentBootId, type KvmProbeResult } from '../../src/qemu/accel-probe.js';
import { chooseAccel, refuseKnownDeadKvm } from '../../src/qemu/accel.js';
import { recordingLogger } from '../support/test-guest.js';

const unusableReason = '/dev/kvm opens, but a guest loop does not finish under KVM within 2000 ms';

/** A cache directory holding this host boot's probe result, as the real probe would have left it. */
async function seededCache(usable: boolean): Promise<string> {
  const bootId = await currentBootId();
  expect(bootId, 'the probe cache needs /proc/sys/kernel/random/boot_id').not.toBe('unknown');
  const cacheDir = mkdtempSync(join(tmpdir(), 'k3s-vm-accel-'));
  const result: KvmProbeResult = { usable, reason: usable ? '' : unusableReason, durationMs: 5, bootId };
  writeFileSync(join(cacheDir, 'kvm-probe.json'), `${JSON.stringify(result)}\n`);
  return cacheDir;
}

describe('the accelerator', () => {
  it('with K3S_VM_ACCEL=kvm, refuses an unusable KVM and says how to fix it', async () => {
    const cacheDir = await seededCache(false);
    const error = await chooseAccel({ accel: 'kvm', cacheDir, logger: recordingLogger() }).catch((e: unknown) => e);
    expect(error).toMatchObject({
      code: 'KVM_UNUSABLE',
      message: expect.stringContaining(unusableReason),
      hint: expect.stringContaining('/etc/udev/rules.d/99-kvm4all.rules'),
    });
    // Known before any build: the cached verdict refuses at once.
    await expect(refuseKnownDeadKvm({ accel: 'kvm', cacheDir })).rejects.toMatchObject({ code: 'KVM_UNUSABLE' });
    await expect(refuseKnownDeadKvm({ accel: 'auto', cacheDir })).resolves.toBeUndefined();
  });

  it('with K3S_VM_ACCEL=kvm and nothing cached, refuses a missing /dev/kvm before any build, and leaves the rest to the probe after it', async () => {
    const empty = () => mkdtempSync(join(tmpdir(), 'k3s-vm-accel-'));
    await expect(refuseKnownDeadKvm({ accel: 'kvm', cacheDir: empty(), devKvm: '/nonexistent/kvm' })).rejects.toMatchObject({
      code: 'KVM_UNUSABLE',
      message:
        'K3S_VM_ACCEL=kvm, but KVM is not usable: /nonexistent/kvm does not exist (no hardware virtualisation, or the kvm module is not loaded)',
    });
    // No QEMU to probe with before the build (a hosted runner has none on PATH): the VM's own
    // QEMU is probed after it.
    const cacheDir = empty();
    await expect(refuseKnownDeadKvm({ accel: 'kvm', cacheDir, devKvm: '/dev/null', qemu: '/nonexistent/qemu' })).resolves.toBeUndefined();
    expect(existsSync(join(cacheDir, 'kvm-probe.json'))).toBe(false);
  });

  it('falls back to emulation with a warning under auto when KVM is unusable', async () => {
    const logger = recordingLogger();
    expect(await chooseAccel({ accel: 'auto', cacheDir: await seededCache(false), logger })).toBe('tcg');
    expect(logger.lines.join('\n')).toMatch(
      /^warning: KVM is not usable \(.*does not finish under KVM.*\); falling back to software emulation \(TCG\).*Timeouts are scaled ×3/m,
    );
  });

  it('uses KVM under auto or kvm when the probe found it working, without a warning', async () => {
    const cacheDir = await seededCache(true);
    const logger = recordingLogger();
    expect(await chooseAccel({ accel: 'auto', cacheDir, logger })).toBe('kvm');
    expect(await chooseAccel({ accel: 'kvm', cacheDir, logger })).toBe('kvm');
    expect(logger.lines.filter((line) => line.startsWith('warning:'))).toEqual([]);
  });

  it('emulates under tcg without probing', async () => {
    // An empty cache and no QEMU on PATH: a probe would have had to run, and could not.
    const cacheDir = mkdtempSync(join(tmpdir(), 'k3s-vm-accel-'));
    expect(await chooseAccel({ accel: 'tcg', cacheDir, logger: recordingLogger(), qemu: '/nonexistent/qemu-system-x86_64' })).toBe('tcg');
  });
});
