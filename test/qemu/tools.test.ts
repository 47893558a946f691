// The QEMU tools of a run script: which QEMU, which qemu-img, which version, found once.
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { qemuNamedBy, qemuToolsOf } from '../../src/qemu/tools.js';

function executable(path: string, text: string): string {
  writeFileSync(path, text);
  chmodSync(path, 0o755);
  return path;
}

describe('the QEMU a run script uses', () => {
  it('is the store path the script execs, or qemu-system-x86_64 from PATH', () => {
    const nixos = '#!/bin/sh\nexec /nix/store/abc123-qemu-host-cpu-only-9.1.0/bin/qemu-system-x86_64 -machine accel=kvm:tcg "$@"\n';
    expect(qemuNamedBy(nixos)).toBe('/nix/store/abc123-qemu-host-cpu-only-9.1.0/bin/qemu-system-x86_64');
    expect(qemuNamedBy('#!/bin/sh\nexec /nix/store/xyz-qemu-8.2/bin/qemu-kvm "$@"\n')).toBe('/nix/store/xyz-qemu-8.2/bin/qemu-kvm');
    expect(qemuNamedBy('#!/bin/sh\nexec qemu-system-x86_64 -machine accel=kvm:tcg "$@"\n')).toBe('qemu-system-x86_64');
  });
});

describe('the tools of a run script', () => {
  it('take qemu-img from PATH for a QEMU found on PATH, or none; read the version once; look again when the script changes', async () => {
    const folder = mkdtempSync(join(tmpdir(), 'k3s-vm-tools-'));
    const bin = join(folder, 'bin');
    mkdirSync(bin);
    const calls = join(folder, 'calls');
    executable(join(bin, 'qemu-system-x86_64'), `#!/bin/sh\necho run >>${calls}\necho 'QEMU emulator version 9.9.9'\n`);
    const script = executable(join(folder, 'run-vm'), '#!/bin/sh\nexec qemu-system-x86_64 "$@"\n');

    const none = await qemuToolsOf(script, bin);
    expect(none).toMatchObject({ qemu: 'qemu-system-x86_64', qemuImg: undefined });
    expect(await none.version()).toBe('QEMU emulator version 9.9.9');
    expect(await (await qemuToolsOf(script, bin)).version()).toBe('QEMU emulator version 9.9.9');
    expect(readFileSync(calls, 'utf8')).toBe('run\n');
    // The same script and PATH: the same answer, not a second look.
    expect(await qemuToolsOf(script, bin)).toBe(none);

    executable(join(bin, 'qemu-img'), '#!/bin/sh\n');
    // A changed script (its size) is looked at again, and now finds qemu-img.
    writeFileSync(script, '#!/bin/sh\n# changed\nexec qemu-system-x86_64 "$@"\n');
    expect((await qemuToolsOf(script, bin)).qemuImg).toBe(join(bin, 'qemu-img'));
  });
});
