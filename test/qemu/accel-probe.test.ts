// The KVM probe: a real guest loop timed under KVM, cached per host boot.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cachedProbeTimeoutMs, probeBootSector, probeKvm, probeKvmCached } from '../../src/qemu/accel-probe.js';

describe('the KVM probe (real QEMU)', () => {
  it('runs its loop to the end under emulation, so the payload itself works', async () => {
    const result = await probeKvm({ accel: 'tcg', timeoutMs: 20_000 });
    expect(result).toMatchObject({ usable: true, reason: '' });
  });

  it('says KVM is unusable when /dev/kvm is missing, without starting QEMU', async () => {
    const result = await probeKvm({ devKvm: '/nonexistent/kvm' });
    expect(result.usable).toBe(false);
    expect(result.reason).toMatch(/\/nonexistent\/kvm does not exist/);
  });

  it('gives this host a verdict with a reason, and caches it for this host boot', async () => {
    const cacheDir = mkdtempSync(join(tmpdir(), 'k3s-vm-probe-'));
    const first = await probeKvmCached(cacheDir);
    expect(first.cached).toBe(false);
    if (!first.usable) expect(first.reason).toMatch(/does not (run guest code|exist)|not accessible|could not use KVM/);
    // The verdict stands for the host boot, so its loop gets the longer budget.
    if (first.reason.includes('did not finish')) expect(first.reason).toContain(`did not finish in ${cachedProbeTimeoutMs} ms`);
    const bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    expect(JSON.parse(readFileSync(join(cacheDir, 'kvm-probe.json'), 'utf8'))).toMatchObject({ bootId, usable: first.usable });
    const second = await probeKvmCached(cacheDir);
    expect(second).toMatchObject({ cached: true, usable: first.usable, reason: first.reason });
  });
});

describe('the KVM probe payload', () => {
  it('is a bootable sector that loops, then writes to the debug-exit port', () => {
    const sector = probeBootSector();
    expect(sector.length).toBe(512);
    expect([sector[510], sector[511]]).toEqual([0x55, 0xaa]);
    expect(sector.readUInt32LE(3)).toBe(100_000_000);
    expect(sector.includes(Buffer.from([0xe6, 0xf4]))).toBe(true);
  });
});
