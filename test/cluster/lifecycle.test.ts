// The VM lifecycle against the real test guest: real Nix, real QEMU, real SSH. Each test starts
// from a state directory of its own.
import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { clusterStatus, resetCluster, startCluster } from '../../src/cluster/index.js';
import { files } from '../../src/state/files.js';
import { InstanceDir } from '../../src/state/instance-dir.js';
import { isRunning } from '../../src/state/process.js';
import { qmpSocketPath } from '../../src/state/status.js';
import { qemuProcessesUsing } from '../support/consumer.js';
import { recordingNixBuild } from '../support/nix-build.js';
import { useStateDirs } from '../support/state-dirs.js';
import { recordingLogger } from '../support/test-guest.js';

const dirs = useStateDirs();

function qemuPidsFor(dir: string): number[] {
  return qemuProcessesUsing(dir).map((line) => Number.parseInt(line.trim(), 10));
}

/** The accelerator a running QEMU really uses: its last `-machine accel=…` wins. */
function accelOnCommandLine(pid: number): string | undefined {
  const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  return argv.flatMap((arg) => [...arg.matchAll(/(?:^|,)accel=([a-z:]+)/g)].map((match) => match[1]!)).at(-1);
}

describe('the VM lifecycle on the test guest', () => {
  it('boots, runs a command over SSH and stops gracefully leaving no QEMU, pid file or socket; the disk survives into the next start, grown to a larger size', async () => {
    const options = dirs.options('life', { accel: 'auto' });
    const dir = new InstanceDir(options.dir);
    const logger = recordingLogger();
    const cluster = await startCluster({ ...options, logger });
    expect(cluster.booted).toBe(true);
    // Under auto, what QEMU really runs under; emulation comes with its warning, KVM without.
    expect(accelOnCommandLine(cluster.pid)).toBe(cluster.accel);
    expect(logger.lines.some((l) => l.includes('falling back to software emulation'))).toBe(cluster.accel === 'tcg');
    const result = await cluster.exec('echo "hello from $(hostname)"; exit 7');
    expect(result).toMatchObject({ stdout: 'hello from test-guest\n', exitCode: 7 });
    expect(qemuPidsFor(options.dir)).toEqual([cluster.pid]);
    expect(existsSync(dir.file(files.pid))).toBe(true);

    await cluster.exec('echo persisted-across-restarts > /root/marker');
    const persistMiB = async (vm: typeof cluster) => Number((await vm.exec("df -m /persist | awk 'NR == 2 { print $2 }'")).stdout);
    expect(options.diskSizeMiB).toBe(2048);
    expect(await persistMiB(cluster)).toBeLessThan(2100);
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

    const againLogger = recordingLogger();
    const again = await startCluster({ ...options, diskSizeMiB: 3072, logger: againLogger });
    expect(again.booted).toBe(true);
    expect((await again.exec('cat /root/marker')).stdout).toBe('persisted-across-restarts\n');
    // The image grew before the boot, the guest's file system with it, the record followed.
    expect(againLogger.lines).toContain("growing the VM's disk from 2048 MiB to 3072 MiB (its file system follows at boot)");
    expect(await persistMiB(again)).toBeGreaterThan(2560); // 3072 MiB less ext4's journal and inode tables
    expect(JSON.parse(readFileSync(dir.file(files.diskRecord), 'utf8')).diskSizeMiB).toBe(3072);
    expect(readFileSync(dir.file(files.serialLog), 'utf8')).toMatch(/disk file system grown from 2048 MiB to 3072 MiB/);
    await again.stop();
  });

  it('refuses to reset a running VM unless forced; reset deletes the disk, so the next start is fresh; keys and build stay', async () => {
    const nixBuild = recordingNixBuild(dirs.fresh('reset-nix'));
    const options = dirs.options('reset', { nixBuild: nixBuild.path });
    const dir = new InstanceDir(options.dir);
    const cluster = await startCluster(options);
    await cluster.exec('echo written-before-reset > /root/marker');
    const storePath = (await clusterStatus(options)).buildPath;
    const key = await dir.readText(files.sshKey);

    await expect(resetCluster(options)).rejects.toMatchObject({ code: 'STILL_RUNNING' });
    expect(isRunning(cluster.pid)).toBe(true);
    await expect(resetCluster({ ...options, force: true })).resolves.toEqual({ stoppedVm: true, deletedDisk: true });
    expect(isRunning(cluster.pid)).toBe(false);
    expect(existsSync(dir.file(files.disk))).toBe(false);
    expect(await dir.readText(files.sshKey)).toBe(key);

    const buildsBefore = nixBuild.count();
    const logger = recordingLogger();
    const fresh = await startCluster({ ...options, logger });
    expect(logger.lines.some((l) => l.startsWith('building the VM'))).toBe(false);
    expect(nixBuild.count()).toBe(buildsBefore);
    expect((await clusterStatus(options)).buildPath).toBe(storePath);
    expect((await fresh.exec('test -e /root/marker')).exitCode).toBe(1);
    await fresh.stop();

    // A stopped VM is reset without force.
    await expect(resetCluster(options)).resolves.toEqual({ stoppedVm: false, deletedDisk: true });
    expect(existsSync(dir.file(files.disk))).toBe(false);
    expect(await dir.readText(files.sshKey)).toBe(key);
  });

  it('reports a QEMU killed with SIGKILL as broken, and the next start recovers, beside another instance with ports of its own', async () => {
    const options = dirs.options('killed');
    const first = await startCluster(options);
    process.kill(first.pid, 'SIGKILL');
    await expect.poll(() => isRunning(first.pid)).toBe(false);
    const status = await clusterStatus(options);
    expect(status.state).toBe('broken');
    expect(status.reasons.join(' ')).toMatch(new RegExp(`QEMU \\(pid ${first.pid}\\) is gone`));
    const logger = recordingLogger();
    // Two instances side by side: the recovering one, and another in a state directory of its own.
    const [second, beside] = await Promise.all([startCluster({ ...options, logger }), startCluster(dirs.options('beside'))]);
    try {
      expect(second.booted).toBe(true);
      expect(second.pid).not.toBe(first.pid);
      expect(logger.lines.some((l) => l.includes('cleaning up after the last VM'))).toBe(true);
      expect(new Set([second.apiPort, second.sshPort, beside.apiPort, beside.sshPort]).size).toBe(4);
      expect(beside.pid).not.toBe(second.pid);
      const [x, y] = await Promise.all([
        second.exec('echo a > /root/who; cat /root/who'),
        beside.exec('echo b > /root/who; cat /root/who'),
      ]);
      expect([x.stdout, y.stdout]).toEqual(['a\n', 'b\n']);
    } finally {
      await first.stop();
      await Promise.all([second.stop(), beside.stop()]);
    }
    expect(qemuPidsFor(options.dir)).toEqual([]);
  });
});
