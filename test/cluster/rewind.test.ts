// Rewind and named snapshots on the test guest: real Nix, real QEMU (savevm / loadvm on the running VM), real SSH and kubectl.
// One VM carries the rewinds, refusals and named snapshots; the fault that stops it comes last.
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { clusterStatus, rewindCluster, startCluster } from '../../src/cluster/index.js';
import { isK3sVmError } from '../../src/errors.js';
import { QmpClient } from '../../src/qemu/qmp.js';
import { snapshotTag, type SnapshotRecord } from '../../src/qemu/snapshot.js';
import { files } from '../../src/state/files.js';
import { InstanceDir } from '../../src/state/instance-dir.js';
import { cli as runCli } from '../support/cli.js';
import { qemuProcessesUsing } from '../support/consumer.js';
import { useStateDirs } from '../support/state-dirs.js';
import { recordingLogger } from '../support/test-guest.js';

const dirs = useStateDirs();
const sleepers: Array<{ kill(): void }> = [];
afterAll(() => sleepers.forEach((sleeper) => sleeper.kill()));

/** Runs the CLI on a state directory, in it; resolves with the exit code and what it printed. */
const cli = (args: string[], dir: string) => runCli([...args, '--dir', dir], { PATH: process.env['PATH'] ?? '', NO_COLOR: '1' }, dir);

function kubectl(kubeconfig: string, ...args: string[]): string {
  return execFileSync('kubectl', ['--kubeconfig', kubeconfig, ...args], { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
}

/** Whether an object exists (kubectl get by name). */
function exists(kubeconfig: string, ...what: string[]): boolean {
  try {
    kubectl(kubeconfig, 'get', ...what, '-o', 'name');
    return true;
  } catch {
    return false;
  }
}

/** Objects of both kinds a test could leave behind: a namespace with a ConfigMap in it, and a CRD. */
function createObjects(kubeconfig: string, suffix: string): void {
  const manifest = [
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: `ns-${suffix}` } },
    { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'left', namespace: `ns-${suffix}` }, data: { a: 'b' } },
    {
      apiVersion: 'apiextensions.k8s.io/v1',
      kind: 'CustomResourceDefinition',
      metadata: { name: `widgets${suffix}.example.com` },
      spec: {
        group: 'example.com',
        scope: 'Cluster',
        names: { plural: `widgets${suffix}`, singular: `widget${suffix}`, kind: `Widget${suffix}` },
        versions: [{ name: 'v1', served: true, storage: true, schema: { openAPIV3Schema: { type: 'object' } } }],
      },
    },
  ];
  // The fake K3s API serves no OpenAPI document for kubectl to validate against.
  execFileSync('kubectl', ['--kubeconfig', kubeconfig, 'apply', '--validate=false', '-f', '-'], {
    input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items: manifest }),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

/** A live process that is not this one, holding a lease on the VM as another run would. */
function otherRunLease(dir: InstanceDir): string {
  const sleeper = spawn('sleep', ['300'], { stdio: 'ignore' });
  sleepers.push(sleeper);
  const id = `${sleeper.pid}-other`;
  writeFileSync(dir.file(join(files.leasesDir, `${id}.json`)), JSON.stringify({ pid: sleeper.pid, createdAt: new Date().toISOString() }));
  return id;
}

describe('rewinding the running VM on the test guest', () => {
  it('returns it to the snapshot without a reboot (objects made since gone, clock and node Ready checked after it, kubeconfig, pid and leases kept), is refused while another run holds it, and goes to and between named snapshots', async () => {
    const options = dirs.options('rew', { snapshot: true });
    const dir = new InstanceDir(options.dir);
    const cluster = await startCluster({ ...options, logger: recordingLogger() });
    expect(cluster.timings.restored).toBe(false);
    const kubeconfigBefore = readFileSync(cluster.kubeconfigPath, 'utf8');

    // Made after the snapshot: a namespaced object, its namespace, a cluster-scoped CRD, a file.
    createObjects(cluster.kubeconfigPath, 'after');
    await cluster.exec('echo after-the-snapshot > /root/marker && sync');
    expect(exists(cluster.kubeconfigPath, 'configmap', 'left', '-n', 'ns-after')).toBe(true);
    expect(exists(cluster.kubeconfigPath, 'crd', 'widgetsafter.example.com')).toBe(true);

    const logger = recordingLogger();
    const rewindStarted = Date.now();
    const result = await rewindCluster({ ...options, logger, ownLeases: [cluster.leaseId] });
    expect(result.snapshot).toBe(snapshotTag);
    // The clock through QEMU's guest agent, then the API's steps alone: no SSH handshake.
    expect(result.clockBy).toBe('guest agent');
    expect(result.steps.map((step) => step.name)).toEqual([
      'API /readyz ok',
      'node Ready',
      'API discovery complete',
      'default ServiceAccount exists',
    ]);
    expect(logger.lines).toContainEqual(expect.stringMatching(/^rewinding test-guest to the ready-state snapshot/));
    expect(logger.lines).toContainEqual(expect.stringMatching(/^rewound test-guest to the ready-state snapshot in [\d.]+ s/));
    expect(exists(cluster.kubeconfigPath, 'namespace', 'ns-after')).toBe(false);
    expect(exists(cluster.kubeconfigPath, 'crd', 'widgetsafter.example.com')).toBe(false);
    expect(exists(cluster.kubeconfigPath, 'namespace', 'default')).toBe(true);
    expect((await cluster.exec('cat /root/marker 2>/dev/null || echo none')).stdout).toBe('none\n');
    // No reboot: the same QEMU, the guest's uptime continues from the snapshot's.
    const status = await clusterStatus({ ...options, probeApi: true });
    expect(status.pid).toBe(cluster.pid);
    expect(status.state).toBe('running');
    expect(status.apiReady).toBe(true);
    expect(status.users).toBe(1);
    expect(readFileSync(cluster.kubeconfigPath, 'utf8')).toBe(kubeconfigBefore);
    const guestSeconds = Number((await cluster.exec('date -u +%s')).stdout.trim());
    expect(Math.abs(guestSeconds - Date.now() / 1000)).toBeLessThan(3);
    // "node Ready" was checked against the rewind: the heartbeat it accepted is newer than its start.
    const node = JSON.parse(kubectl(cluster.kubeconfigPath, 'get', 'node', 'test-guest', '-o', 'json')) as {
      status: { conditions: Array<{ type: string; lastHeartbeatTime: string }> };
    };
    const ready = node.status.conditions.find((condition) => condition.type === 'Ready')!;
    expect(Date.parse(ready.lastHeartbeatTime)).toBeGreaterThanOrEqual(Math.floor(rewindStarted / 1000) * 1000 - 2000);

    // The handle's rewind, from this run: again to the same state (the snapshot survives a rewind).
    // With the guest agent out of reach (its host socket gone), the clock is set over SSH.
    createObjects(cluster.kubeconfigPath, 'again');
    rmSync(dir.file(files.guestAgent));
    const overSsh = await rewindCluster({ ...options, logger: recordingLogger(), ownLeases: [cluster.leaseId] });
    expect(overSsh.clockBy).toBe('ssh');
    expect(overSsh.steps[0]?.name).toBe('SSH answers');
    expect(exists(cluster.kubeconfigPath, 'namespace', 'ns-again')).toBe(false);
    expect(Math.abs(Number((await cluster.exec('date -u +%s')).stdout.trim()) - Date.now() / 1000)).toBeLessThan(3);
    await cluster.rewind();

    // Another run holds the VM: refused, and the VM is untouched.
    createObjects(cluster.kubeconfigPath, 'kept');
    const other = otherRunLease(dir);
    const refused = await cluster.rewind().catch((error: unknown) => error);
    expect(isK3sVmError(refused, 'VM_IN_USE')).toBe(true);
    expect((refused as Error).message).toMatch(/refusing to rewind the VM: 1 other run\(s\) use it \(process \d+\)/);
    expect(exists(cluster.kubeconfigPath, 'namespace', 'ns-kept')).toBe(true);
    const refusedCli = await cli(['rewind'], options.dir);
    expect(refusedCli.code).toBe(1);
    expect(refusedCli.err).toContain('other run(s) use it');
    await import('node:fs/promises').then((fs) => fs.rm(dir.file(join(files.leasesDir, `${other}.json`))));

    // Named snapshots: saved with ns-kept in it; restore returns to it, and to the automatic one.
    expect((await cli(['snapshot', 'save', 'with-kept'], options.dir)).code).toBe(0);
    createObjects(cluster.kubeconfigPath, 'later');
    const listed = await cli(['snapshot', 'ls'], options.dir);
    expect(listed.out).toMatch(new RegExp(`^${snapshotTag} .*\\(automatic\\)$`, 'm'));
    expect(listed.out).toMatch(/^with-kept {2,}\S+ {2}[\d.]+ MiB {2}\/nix\/store\/\S+$/m);
    // The CLI holds no lease, and this run's lease is in this process: the CLI may rewind it.
    expect((await cli(['snapshot', 'restore', 'with-kept'], options.dir)).code).toBe(0);
    expect(exists(cluster.kubeconfigPath, 'namespace', 'ns-kept')).toBe(true);
    expect(exists(cluster.kubeconfigPath, 'namespace', 'ns-later')).toBe(false);
    expect((await cli(['rewind'], options.dir)).code).toBe(0);
    expect(exists(cluster.kubeconfigPath, 'namespace', 'ns-kept')).toBe(false);
    expect(readFileSync(cluster.kubeconfigPath, 'utf8')).toBe(kubeconfigBefore);

    // Names are checked before anything is touched.
    for (const bad of ['123', 'k3s-vm-mine', 'has space', '.dot', 'a/b']) {
      const invalid = await cli(['snapshot', 'save', bad], options.dir);
      expect(invalid.code).toBe(2);
      expect(invalid.err).toContain(`invalid snapshot name ${JSON.stringify(bad)}`);
    }
    expect((await cli(['snapshot', 'restore', 'nothing-here'], options.dir)).err).toContain(
      'cannot rewind to snapshot nothing-here: there is none by that name',
    );

    // A snapshot of another build is refused with the reason, the VM untouched.
    createObjects(cluster.kubeconfigPath, 'stays');
    const recordPath = dir.file(join(files.snapshotsDir, 'with-kept.json'));
    const saved = JSON.parse(readFileSync(recordPath, 'utf8')) as SnapshotRecord;
    writeFileSync(recordPath, JSON.stringify({ ...saved, key: { ...saved.key, storePath: '/nix/store/0000-other-build' } }));
    const otherBuild = await cli(['snapshot', 'restore', 'with-kept'], options.dir);
    expect(otherBuild.code).toBe(1);
    expect(otherBuild.err).toContain(
      `cannot rewind to snapshot with-kept: the running VM differs from what it was when the snapshot was saved (storePath: /nix/store/0000-other-build → ${saved.key.storePath})`,
    );
    // A damaged record: refused the same way.
    writeFileSync(recordPath, '{"tag": "with-');
    expect((await cli(['snapshot', 'restore', 'with-kept'], options.dir)).err).toContain('its record is damaged');
    expect(exists(cluster.kubeconfigPath, 'namespace', 'ns-stays')).toBe(true);
    writeFileSync(recordPath, JSON.stringify(saved));

    // rm deletes it from the running VM's disk.
    expect((await cli(['snapshot', 'rm', 'with-kept'], options.dir)).code).toBe(0);
    expect((await cli(['snapshot', 'ls'], options.dir)).out).not.toContain('with-kept');
    const inDisk = JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', dir.file(files.disk)], { encoding: 'utf8' })) as {
      snapshots?: Array<{ name: string }>;
    };
    expect((inDisk.snapshots ?? []).map((entry) => entry.name)).toEqual([snapshotTag]);

    // QEMU refusing the load (a disk-only snapshot behind a record that matches it): the rewind
    // fails naming QEMU's reason, and the VM, no longer what it was, is stopped.
    const runtime = JSON.parse(readFileSync(dir.file(files.runtime), 'utf8')) as { qmpSocket: string };
    const qmp = await QmpClient.connect(runtime.qmpSocket);
    const blocks = await qmp.execute<Array<{ device: string; inserted?: { file: string } }>>('query-block');
    const device = blocks.find((block) => block.inserted?.file === dir.file(files.disk))!.device;
    await qmp.execute('blockdev-snapshot-internal-sync', { device, name: 'disk-only' });
    qmp.close();
    const entry = (
      JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', dir.file(files.disk)], { encoding: 'utf8' })) as {
        snapshots: Array<Record<string, string | number>>;
      }
    ).snapshots.find((snapshot) => snapshot['name'] === 'disk-only')!;
    writeFileSync(
      dir.file(join(files.snapshotsDir, 'disk-only.json')),
      JSON.stringify({
        ...saved,
        tag: 'disk-only',
        disk: {
          id: String(entry['id']),
          name: 'disk-only',
          vmStateBytes: Number(entry['vm-state-size']),
          dateSec: Number(entry['date-sec']),
          dateNsec: Number(entry['date-nsec']),
        },
      }),
    );
    const failed = await cluster.rewind('disk-only').catch((error: unknown) => error);
    expect(isK3sVmError(failed, 'REWIND_FAILED')).toBe(true);
    expect((failed as Error).message).toMatch(
      /^rewinding to snapshot disk-only failed: QEMU refused to load it.*disk-only.*; the VM was stopped$/,
    );
    expect(qemuProcessesUsing(options.dir)).toEqual([]);
    expect((await clusterStatus(options)).state).toBe('stopped');
    expect((await cluster.stop()).stoppedVm).toBe(false);
  });
});
