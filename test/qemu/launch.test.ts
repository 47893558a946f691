// Launching the VM through the NixOS run-script contract, and what the launched VM exposes.
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { networkInterfaces } from 'node:os';
import { describe, expect, it } from 'vitest';
import { runScriptEnv, type LaunchPlan } from '../../src/qemu/launch.js';
import { sharedGuest } from '../support/shared-guest.js';

const plan: Omit<LaunchPlan, 'env'> = {
  runScript: '/nix/store/x/bin/run-k3s-vm-vm',
  diskImage: '/p/.k3s-vm/disk.qcow2',
  tmpDir: '/p/.k3s-vm/tmp',
  qmpSocket: '/p/.k3s-vm/qmp.sock',
  apiPort: 41234,
  sshPort: 41235,
  accel: 'tcg',
  kernelParams: ['k3s_fake.node_ready_delay_ms=100', 'quiet'],
};

describe('the run-script environment', () => {
  it('follows the NixOS run-script contract', () => {
    const env = runScriptEnv(plan);
    expect(env).toEqual({
      NIX_DISK_IMAGE: '/p/.k3s-vm/disk.qcow2',
      TMPDIR: '/p/.k3s-vm/tmp',
      USE_TMPDIR: '1',
      QEMU_NET_OPTS: 'hostfwd=tcp:127.0.0.1:41234-:6443,hostfwd=tcp:127.0.0.1:41235-:22',
      QEMU_OPTS:
        '-machine accel=tcg -qmp unix:/p/.k3s-vm/qmp.sock,server=on,wait=off -no-reboot' +
        ' -chardev socket,id=k3svm-qga,path=/p/.k3s-vm/qga.sock,server=on,wait=off -device virtio-serial-pci,id=k3svm-serial' +
        ' -device virtserialport,bus=k3svm-serial.0,chardev=k3svm-qga,name=org.qemu.guest_agent.0',
      // Under emulation the kernel trusts the TSC first (launch.ts), then the user's parameters.
      QEMU_KERNEL_PARAMS: 'tsc=reliable k3s_fake.node_ready_delay_ms=100 quiet',
    });
    expect(runScriptEnv({ ...plan, accel: 'kvm' }).QEMU_KERNEL_PARAMS).toBe('k3s_fake.node_ready_delay_ms=100 quiet');
  });

  it('binds every forward to 127.0.0.1, never to all interfaces', () => {
    const forwards = runScriptEnv(plan).QEMU_NET_OPTS!.split(',');
    expect(forwards.every((f) => f.startsWith('hostfwd=tcp:127.0.0.1:'))).toBe(true);
  });

  it('insists on the chosen accelerator instead of the script’s kvm:tcg fallback', () => {
    expect(runScriptEnv({ ...plan, accel: 'kvm' }).QEMU_OPTS).toMatch(/^-machine accel=kvm /);
  });
});

/** Local addresses that listen on a TCP port, from /proc/net/tcp and tcp6 (hex "ADDR:PORT"). */
function listenersOn(port: number): string[] {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  const rows = [
    ...readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1),
    ...readFileSync('/proc/net/tcp6', 'utf8').split('\n').slice(1),
  ];
  return rows
    .map((row) => row.trim().split(/\s+/))
    .filter((cols) => cols[3] === '0A' && cols[1]?.endsWith(`:${hexPort}`))
    .map((cols) => cols[1]!.split(':')[0]!);
}

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port, timeout: 2000 });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
  });
}

describe('a launched VM (the shared test guest)', () => {
  it('listens for the API and SSH on 127.0.0.1 only', async () => {
    const { apiPort, sshPort } = sharedGuest().provided;
    expect(sshPort).toBeTypeOf('number');
    const external = Object.values(networkInterfaces())
      .flat()
      .find((address) => address && address.family === 'IPv4' && !address.internal);
    if (!external) console.log('no external IPv4 address on this host: only the listening addresses are checked');
    for (const port of [apiPort, sshPort!]) {
      expect(listenersOn(port)).toEqual(['0100007F']);
      if (external) expect(await canConnect(external.address, port)).toBe(false);
      expect(await canConnect('127.0.0.1', port)).toBe(true);
    }
  });
});
