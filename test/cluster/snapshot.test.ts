// Snapshots on the test guest: real Nix, real QEMU (savevm / -loadvm), real SSH. One state
// directory carries the save, restores, Ctrl-C, concurrency, status and removal, so that the file
// boots only a few times (~10 s each); the cold-boot fallbacks that need QEMU each get one more boot.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { clusterStatus, resetCluster, startCluster, stopCluster } from '../../src/cluster/index.js';
import { configOf } from '../../src/cluster/prepare.js';
import { planRestore } from '../../src/cluster/snapshot.js';
import { DiskImage } from '../../src/qemu/disk.js';
import { snapshotTag, type SnapshotRecord } from '../../src/qemu/snapshot.js';
import { files } from '../../src/state/files.js';
import { InstanceDir } from '../../src/state/instance-dir.js';
import { cli as runCli } from '../support/cli.js';
import { qemuProcessesUsing } from '../support/consumer.js';
import { useStateDirs } from '../support/state-dirs.js';
import { recordingLogger, testGuestEnv } from '../support/test-guest.js';

const dirs = useStateDirs();

function snapshotsInDisk(dir: InstanceDir): string[] {
  const info = JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', dir.file(files.disk)], { encoding: 'utf8' })) as {
    snapshots?: Array<{ name: string }>;
  };
  return (info.snapshots ?? []).map((entry) => entry.name);
}

/** Runs the CLI on a state directory, in it; resolves with the exit code and what it printed. */
const cli = (args: string[], dir: string) => runCli([...args, '--dir', dir], { PATH: process.env['PATH'] ?? '', NO_COLOR: '1' }, dir);

function record(dir: InstanceDir): SnapshotRecord {
  return JSON.parse(readFileSync(dir.file(files.snapshotRecord), 'utf8')) as SnapshotRecord;
}

describe('snapshots on the test guest', () => {
  it('saves once ready, restores instead of booting (clock set, node freshly Ready), survives Ctrl-C during a restore, restores once for concurrent runs, stays up when kept, shows in status and is removed by snapshot rm and reset', async () => {
    const options = dirs.options('snap', { snapshot: true });
    const dir = new InstanceDir(options.dir);

    // 1. Cold boot, then saved.
    const coldLogger = recordingLogger();
    const cold = await startCluster({ ...options, logger: coldLogger });
    expect(cold.booted).toBe(true);
    expect(cold.timings.restored).toBe(false);
    expect(coldLogger.lines.some((line) => line.startsWith('saved the ready VM'))).toBe(true);
    expect(snapshotsInDisk(dir)).toEqual([snapshotTag]);
    const saved = record(dir);
    expect(saved.disk.vmStateBytes).toBeGreaterThan(10 * 1024 * 1024);
    const status = await clusterStatus(options);
    expect(status.snapshot).toMatchObject({ vmStateBytes: saved.disk.vmStateBytes, storePath: saved.key.storePath });
    const shown = await cli(['status'], options.dir);
    expect(shown.out).toMatch(/^ {2}snapshot: +[\d.]+ MiB of VM state in the disk, saved /m);
    expect((await cli(['snapshot'], options.dir)).out).toContain(saved.key.storePath);
    // Written after the save: a restore returns the disk to the saved state.
    await cold.exec('echo written-after-the-save > /root/marker && sync');
    await cold.stop();
    const coldReadyMs = cold.timings.launchMs! + cold.timings.readyMs!;

    // 2. Ctrl-C while restoring: no QEMU left, the snapshot intact.
    const controller = new AbortController();
    const abortLogger = recordingLogger();
    const abortingLogger = {
      ...abortLogger,
      progress(message: string) {
        abortLogger.progress(message);
        if (message.startsWith('restoring the saved')) setTimeout(() => controller.abort(), 50);
      },
    };
    await expect(startCluster({ ...options, logger: abortingLogger, signal: controller.signal })).rejects.toThrow();
    expect(abortLogger.lines.some((line) => line.startsWith('restoring the saved'))).toBe(true);
    expect(qemuProcessesUsing(options.dir)).toEqual([]);
    expect(record(dir)).toEqual(saved);
    expect(snapshotsInDisk(dir)).toEqual([snapshotTag]);

    // 3. Two runs at once: one restore, the other attaches.
    const restoreStarted = Date.now();
    const logger = recordingLogger();
    const [a, b] = await Promise.all([startCluster({ ...options, logger }), startCluster({ ...options, logger })]);
    const restored = [a, b].filter((cluster) => cluster.timings.restored);
    expect(restored).toHaveLength(1);
    expect([a, b].filter((cluster) => cluster.booted)).toHaveLength(1);
    expect(logger.lines.filter((line) => line.startsWith('restoring the saved'))).toHaveLength(1);
    const first = restored[0]!;
    expect(first.timings.clockMs).toBeDefined();
    expect(first.timings.clockBy).toBe('guest agent');
    // Far quicker than the cold boot, and the disk is the saved one.
    expect(first.timings.launchMs! + (first.timings.clockMs ?? 0) + first.timings.readyMs!).toBeLessThan(coldReadyMs * 0.5);
    expect((await first.exec('cat /root/marker 2>/dev/null || echo none')).stdout).toBe('none\n');
    // The guest's clock is the host's, not the save's.
    const guestSeconds = Number((await first.exec('date -u +%s')).stdout.trim());
    expect(Math.abs(guestSeconds - Date.now() / 1000)).toBeLessThan(3);
    // The node was reported Ready after the restore (the readiness step checked it against the launch).
    const nodes = JSON.parse(
      execFileSync('kubectl', ['--kubeconfig', first.kubeconfigPath, 'get', 'nodes', '-o', 'json'], { encoding: 'utf8' }),
    ) as {
      items: Array<{ status: { conditions: Array<{ type: string; lastHeartbeatTime: string }> } }>;
    };
    const ready = nodes.items[0]!.status.conditions.find((condition) => condition.type === 'Ready')!;
    expect(Date.parse(ready.lastHeartbeatTime)).toBeGreaterThanOrEqual(Math.floor(restoreStarted / 1000) * 1000);
    expect(Date.parse(ready.lastHeartbeatTime)).toBeGreaterThan(Date.parse(saved.savedAt));
    // snapshot rm refuses while the VM holds the disk.
    const refused = await cli(['snapshot', 'rm'], options.dir);
    expect(refused.code).toBe(1);
    expect(refused.err).toContain('stop it first');
    expect(record(dir)).toEqual(saved);
    await a.stop();
    await b.stop();
    expect(qemuProcessesUsing(options.dir)).toEqual([]);

    // 4. Kept: a restored VM stays up after its run, and the next run attaches to it.
    const kept = await startCluster({ ...options, keep: true });
    expect(kept.timings.restored).toBe(true);
    expect((await kept.stop()).stoppedVm).toBe(false);
    const attached = await startCluster(options);
    expect(attached.booted).toBe(false);
    expect(attached.pid).toBe(kept.pid);
    await attached.stop();
    await stopCluster({ ...options, force: true });
    expect(qemuProcessesUsing(options.dir)).toEqual([]);

    // 5. snapshot rm, then reset, each remove it.
    expect((await cli(['snapshot', 'rm'], options.dir)).code).toBe(0);
    expect(existsSync(dir.file(files.snapshotRecord))).toBe(false);
    expect(snapshotsInDisk(dir)).toEqual([]);
    expect((await clusterStatus(options)).snapshot).toBeUndefined();
    expect((await cli(['snapshot'], options.dir)).out).toMatch(/^no snapshot/);
    writeFileSync(dir.file(files.snapshotRecord), JSON.stringify(saved));
    await resetCluster(options);
    expect(existsSync(dir.file(files.snapshotRecord))).toBe(false);
    expect(existsSync(dir.file(files.disk))).toBe(false);
    expect((await clusterStatus(options)).snapshot).toBeUndefined();
  });

  it('boots cold with the reason when the snapshot does not match, is damaged, or QEMU refuses it, and saves a new one', async () => {
    const options = dirs.options('snapbad', { snapshot: true });
    const dir = new InstanceDir(options.dir);
    const first = await startCluster(options);
    await first.stop();
    const saved = record(dir);

    // A changed kernel command line: the saved boot's no longer matches.
    const changedLogger = recordingLogger();
    const changed = await startCluster({ ...options, kernelParams: ['k3s_fake.node_ready_delay_ms=1'], logger: changedLogger });
    expect(changed.timings.restored).toBe(false);
    expect(changedLogger.lines).toContainEqual(
      expect.stringMatching(
        /^cold boot: the snapshot is not restored because the VM changed since the snapshot was saved \(kernelParams: {2}→ k3s_fake/,
      ),
    );
    await changed.stop();
    // That start saved its own: the key follows the new kernel command line.
    expect(record(dir).key.kernelParams).toBe('k3s_fake.node_ready_delay_ms=1');

    // A snapshot QEMU refuses (disk only, no VM state) behind a record that matches it: the
    // restore fails, the boot falls back to a cold one and saves anew.
    const disk = dir.file(files.disk);
    execFileSync('qemu-img', ['snapshot', '-d', snapshotTag, disk]);
    execFileSync('qemu-img', ['snapshot', '-c', snapshotTag, disk]);
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', disk], { encoding: 'utf8' })) as {
      snapshots: Array<Record<string, number | string>>;
    };
    const entry = info.snapshots[0]!;
    const current = record(dir);
    writeFileSync(
      dir.file(files.snapshotRecord),
      JSON.stringify({
        ...current,
        disk: {
          id: String(entry['id']),
          name: snapshotTag,
          vmStateBytes: Number(entry['vm-state-size']),
          dateSec: Number(entry['date-sec']),
          dateNsec: Number(entry['date-nsec']),
        },
      }),
    );
    const refusedLogger = recordingLogger();
    const refused = await startCluster({ ...options, kernelParams: ['k3s_fake.node_ready_delay_ms=1'], logger: refusedLogger });
    expect(refused.timings.restored).toBe(false);
    expect(refusedLogger.lines).toContainEqual(expect.stringMatching(/^restoring the saved/));
    expect(refusedLogger.lines).toContainEqual(
      expect.stringMatching(/^cold boot: restoring the snapshot failed \(QEMU \(pid \d+\) exited/),
    );
    expect(refusedLogger.lines.some((line) => line.startsWith('saved the ready VM'))).toBe(true);
    await refused.stop();
    expect(record(dir).disk.vmStateBytes).toBeGreaterThan(0);
    expect(saved.key.storePath).toBe(record(dir).key.storePath);

    // A damaged record: decided before anything is launched (the cold boot after it is the one
    // shown above), and the snapshot goes with it.
    writeFileSync(dir.file(files.snapshotRecord), '{"tag": "k3s-vm-re');
    const damagedLogger = recordingLogger();
    const { storePath } = JSON.parse(readFileSync(dir.file(files.buildStamp), 'utf8')) as { storePath: string };
    const plan = await planRestore({
      dir,
      config: configOf({ ...options, kernelParams: ['k3s_fake.node_ready_delay_ms=1'] }),
      image: await DiskImage.of(dir.file(files.disk), join(storePath, 'bin', 'run-test-guest-vm'), testGuestEnv()['PATH']),
      storePath,
      sshPublicKey: readFileSync(dir.file(files.sshPublicKey), 'utf8').trim(),
      accel: 'tcg',
      logger: damagedLogger,
    });
    expect(plan.restore).toBe(false);
    expect(damagedLogger.lines).toContainEqual(expect.stringMatching(/^cold boot: .*snapshot\.json is damaged/));
    expect(snapshotsInDisk(dir)).toEqual([]);
    expect(existsSync(dir.file(files.snapshotRecord))).toBe(false);
  });
});

describe('the snapshot as status shows it', () => {
  it('is shown only while the disk holds it: a record whose snapshot is gone from the disk shows none', async () => {
    const dir = new InstanceDir(dirs.fresh('snapshot-status'));
    await dir.ensure();
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', dir.file(files.disk), '16M']);
    execFileSync('qemu-img', ['snapshot', '-c', snapshotTag, dir.file(files.disk)]);
    const info = JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', dir.file(files.disk)], { encoding: 'utf8' })) as {
      snapshots: Array<Record<string, string | number>>;
    };
    const entry = info.snapshots[0]!;
    const saved: SnapshotRecord = {
      tag: snapshotTag,
      key: { storePath: '/nix/store/x', qemuVersion: 'QEMU', memoryMiB: 1024, cpus: 1, accel: 'tcg', kernelParams: '', sshPublicKey: '' },
      machine: 'pc',
      disk: {
        id: String(entry['id']),
        name: snapshotTag,
        vmStateBytes: Number(entry['vm-state-size']),
        dateSec: Number(entry['date-sec']),
        dateNsec: Number(entry['date-nsec']),
      },
      savedAt: '2026-01-01T00:00:00.000Z',
      saveMs: 300,
    };
    writeFileSync(dir.file(files.snapshotRecord), JSON.stringify(saved));
    const options = { dir: dir.path, env: { PATH: process.env['PATH'] } };
    expect((await clusterStatus(options)).snapshot).toMatchObject({ savedAt: saved.savedAt });
    expect((await cli(['snapshot', 'ls'], dir.path)).out).toMatch(/^k3s-vm-ready {2}2026-01-01T00:00:00\.000Z {2}/);

    execFileSync('qemu-img', ['snapshot', '-d', snapshotTag, dir.file(files.disk)]);
    expect((await clusterStatus(options)).snapshot).toBeUndefined();
    expect((await cli(['snapshot', 'ls'], dir.path)).out).toMatch(/^no snapshot/);
    expect((await cli(['status'], dir.path)).out).not.toMatch(/snapshot:/);
  });
});
