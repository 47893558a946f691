import { describe, expect, it } from 'vitest';
import { runScriptEnv, type LaunchPlan } from '../../src/qemu/launch.js';
import { choosePorts, isPortFree } from '../../src/qemu/ports.js';
import { probeBootSector } from '../../src/qemu/accel-probe.js';
import { createServer } from 'node:net';

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
      QEMU_OPTS: '-machine accel=tcg -qmp unix:/p/.k3s-vm/qmp.sock,server=on,wait=off -no-reboot',
      QEMU_KERNEL_PARAMS: 'k3s_fake.node_ready_delay_ms=100 quiet',
    });
  });

  it('binds every forward to 127.0.0.1, never to all interfaces', () => {
    const forwards = runScriptEnv(plan).QEMU_NET_OPTS!.split(',');
    expect(forwards.every((f) => f.startsWith('hostfwd=tcp:127.0.0.1:'))).toBe(true);
  });

  it('insists on the chosen accelerator instead of the script’s kvm:tcg fallback', () => {
    expect(runScriptEnv({ ...plan, accel: 'kvm' }).QEMU_OPTS).toMatch(/^-machine accel=kvm /);
  });
});

describe('ports', () => {
  it('chooses two different free ports on 127.0.0.1', async () => {
    const { apiPort, sshPort } = await choosePorts({ apiPort: undefined, sshPort: undefined });
    expect(apiPort).not.toBe(sshPort);
    expect(await isPortFree(apiPort)).toBe(true);
  });

  it('refuses a fixed port that is taken, naming the variable', async () => {
    const server = createServer().listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    const port = (server.address() as { port: number }).port;
    await expect(choosePorts({ apiPort: port, sshPort: undefined })).rejects.toMatchObject({
      code: 'PORT_IN_USE',
      message: expect.stringContaining(`K3S_VM_API_PORT=${port}`),
    });
    server.close();
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
