// The VM lifecycle against the real test guest: real Nix, real QEMU, real SSH.
import { existsSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { networkInterfaces } from 'node:os';
import { afterAll, describe, expect, it } from 'vitest';
import { clusterStatus, resetCluster, startCluster, stopCluster, type StartedCluster } from '../../src/cluster/index.js';
import { files } from '../../src/state/files.js';
import { InstanceDir } from '../../src/state/instance-dir.js';
import { isRunning } from '../../src/state/process.js';
import { qmpSocketPath } from '../../src/state/status.js';
import { qemuProcessesUsing } from '../helpers/consumer.js';
import { recordingLogger, testGuestOptions } from '../helpers/test-guest.js';

const started: StartedCluster[] = [];
const dirs: string[] = [];
afterAll(async () => {
  for (const dir of dirs) await stopCluster({ dir, env: {}, force: true }).catch(() => undefined);
});

function qemuPidsFor(dir: string): number[] {
  return qemuProcessesUsing(dir).map((line) => Number.parseInt(line.trim(), 10));
}

/** Local addresses that listen on a TCP port, from /proc/net/tcp (hex "ADDR:PORT"). */
function listenersOn(port: number): string[] {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  const rows = [...readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1), ...readFileSync('/proc/net/tcp6', 'utf8').split('\n').slice(1)];
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

describe('the VM lifecycle on the test guest', () => {
  const options = testGuestOptions('life', { accel: 'auto' });
  dirs.push(options.dir);
  const dir = new InstanceDir(options.dir);

  it('builds, boots, runs a command over SSH and stops leaving no QEMU, pid file or socket', async () => {
    const logger = recordingLogger();
    const cluster = await startCluster({ ...options, logger });
    started.push(cluster);
    expect(cluster.booted).toBe(true);
    expect(cluster.accel).toBe(logger.lines.some((l) => l.includes('falling back to software emulation')) ? 'tcg' : 'kvm');
    const result = await cluster.exec('echo "hello from $(hostname)"; exit 7');
    expect(result).toMatchObject({ stdout: 'hello from test-guest\n', exitCode: 7 });
    expect(qemuPidsFor(options.dir)).toEqual([cluster.pid]);
    expect(existsSync(dir.file(files.pid))).toBe(true);

    await cluster.exec('echo persisted-across-restarts > /root/marker');
    const { stoppedVm } = await cluster.stop();
    expect(stoppedVm).toBe(true);
    expect(isRunning(cluster.pid)).toBe(false);
    expect(qemuPidsFor(options.dir)).toEqual([]);
    expect(existsSync(dir.file(files.pid))).toBe(false);
    expect(existsSync(qmpSocketPath(dir))).toBe(false);
    expect(existsSync(dir.file(files.kubeconfig))).toBe(false);
    expect((await clusterStatus(options)).state).toBe('stopped');
    // The graceful path was taken: the guest powered itself off.
    expect(logger.lines.some((l) => /stopped the VM \(powerdown/.test(l))).toBe(true);
  });

  it('keeps what was written to the disk across a stop and a start', async () => {
    const cluster = await startCluster(options);
    expect((await cluster.exec('cat /root/marker')).stdout).toBe('persisted-across-restarts\n');
    await cluster.stop();
  });

  it('reset deletes the disk, so the next start is fresh; keys and build stay', async () => {
    const storePath = (await clusterStatus(options)).buildPath;
    const key = await dir.readText(files.sshKey);
    const result = await resetCluster(options);
    expect(result).toEqual({ stoppedVm: false, deletedDisk: true });
    expect(existsSync(dir.file(files.disk))).toBe(false);
    expect(await dir.readText(files.sshKey)).toBe(key);
    const logger = recordingLogger();
    const cluster = await startCluster({ ...options, logger });
    expect(logger.lines.some((l) => l.startsWith('building the VM'))).toBe(false);
    expect((await clusterStatus(options)).buildPath).toBe(storePath);
    expect((await cluster.exec('test -e /root/marker')).exitCode).toBe(1);
    await cluster.stop();
  });

  it('refuses to reset a running VM unless forced', async () => {
    const cluster = await startCluster({ ...options, keep: true });
    await expect(resetCluster(options)).rejects.toMatchObject({ code: 'STILL_RUNNING' });
    expect(isRunning(cluster.pid)).toBe(true);
    await expect(resetCluster({ ...options, force: true })).resolves.toEqual({ stoppedVm: true, deletedDisk: true });
    expect(isRunning(cluster.pid)).toBe(false);
  });

  it('reports a QEMU killed with SIGKILL as broken, and the next start recovers', async () => {
    const first = await startCluster(options);
    process.kill(first.pid, 'SIGKILL');
    await expect.poll(() => isRunning(first.pid)).toBe(false);
    const status = await clusterStatus(options);
    expect(status.state).toBe('broken');
    expect(status.reasons.join(' ')).toMatch(new RegExp(`QEMU \\(pid ${first.pid}\\) is gone`));
    const logger = recordingLogger();
    const second = await startCluster({ ...options, logger });
    expect(second.booted).toBe(true);
    expect(second.pid).not.toBe(first.pid);
    expect(logger.lines.some((l) => l.includes('cleaning up after the last VM'))).toBe(true);
    expect((await second.exec('true')).exitCode).toBe(0);
    await first.stop();
    await second.stop();
    expect(qemuPidsFor(options.dir)).toEqual([]);
  });

  it('listens on 127.0.0.1 only', async () => {
    const cluster = await startCluster(options);
    try {
      for (const port of [cluster.apiPort, cluster.sshPort]) {
        expect(listenersOn(port)).toEqual(['0100007F']);
        const external = Object.values(networkInterfaces())
          .flat()
          .find((address) => address && address.family === 'IPv4' && !address.internal);
        if (external) expect(await canConnect(external.address, port)).toBe(false);
        expect(await canConnect('127.0.0.1', port)).toBe(true);
      }
    } finally {
      await cluster.stop();
    }
  });
});

describe('two instances side by side', () => {
  it('get different ports and both work', async () => {
    const a = testGuestOptions('pair-a');
    const b = testGuestOptions('pair-b');
    dirs.push(a.dir, b.dir);
    const [first, second] = await Promise.all([startCluster(a), startCluster(b)]);
    try {
      expect(new Set([first.apiPort, first.sshPort, second.apiPort, second.sshPort]).size).toBe(4);
      expect(first.pid).not.toBe(second.pid);
      const [x, y] = await Promise.all([first.exec('echo a > /root/who; cat /root/who'), second.exec('echo b > /root/who; cat /root/who')]);
      expect([x.stdout, y.stdout]).toEqual(['a\n', 'b\n']);
    } finally {
      await Promise.all([first.stop(), second.stop()]);
    }
  });
});
