// How this instance's QEMU is recognised: the -qmp argument launch writes, and the matcher for it.
import { spawn } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { runScriptEnv } from '../../src/qemu/launch.js';
import { isInstanceQemu } from '../../src/state/process.js';
import { isQemuCommandLine, qmpArgument } from '../../src/state/qemu-identity.js';

const children: Array<{ kill(): void }> = [];
afterAll(() => children.forEach((c) => c.kill()));

const socket = '/tmp/k3s-vm-identity/.k3s-vm/qmp.sock';

describe("the instance's QEMU", () => {
  it('is launched with the -qmp argument the matcher looks for', () => {
    expect(qmpArgument(socket)).toBe(`unix:${socket},server=on,wait=off`);
    const { QEMU_OPTS } = runScriptEnv({
      runScript: '/nix/store/x/bin/run-k3s-vm-vm',
      diskImage: '/p/disk.qcow2',
      tmpDir: '/p/tmp',
      qmpSocket: socket,
      apiPort: 41234,
      sshPort: 41235,
      accel: 'tcg',
      kernelParams: [],
    });
    expect(isQemuCommandLine(['qemu-system-x86_64', ...QEMU_OPTS!.split(' ')], socket)).toBe(true);
    // The run script may pass QEMU_OPTS on as one word-split string.
    expect(isQemuCommandLine(['sh', '-c', `exec qemu ${QEMU_OPTS}`], socket)).toBe(true);
  });

  it('is not matched by the socket of another instance or a longer path', () => {
    expect(isQemuCommandLine(['qemu', '-qmp', qmpArgument(`${socket}.other`)], socket)).toBe(false);
    expect(isQemuCommandLine(['qemu', '-qmp', `unix:${socket}`], socket)).toBe(false);
    expect(isQemuCommandLine(['qemu'], socket)).toBe(false);
  });

  it('is identified among live processes by the QMP socket on its command line', () => {
    // A stand-in process whose argv carries the socket the way QEMU's does.
    const fake = spawn('sh', ['-c', 'sleep 60', 'qemu', '-qmp', `unix:${socket},server=on,wait=off`]);
    children.push(fake);
    expect(isInstanceQemu(fake.pid!, socket)).toBe(true);
    expect(isInstanceQemu(fake.pid!, `${socket}.other`)).toBe(false);
  });
});
