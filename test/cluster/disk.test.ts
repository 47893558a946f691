// The disk outlives rebuilds: what it was made for is recorded, and a change it cannot follow is refused before anything runs.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkDisk } from '../../src/cluster/disk.js';
import { startCluster } from '../../src/cluster/index.js';
import { resolveConfig } from '../../src/config/resolve-config.js';
import { K3sVmError } from '../../src/errors.js';
import { files } from '../../src/state/files.js';
import { InstanceDir } from '../../src/state/instance-dir.js';
import { recordingLogger, repoRoot, testGuestNix } from '../helpers/test-guest.js';

async function instance(record?: object) {
  const dir = new InstanceDir(mkdtempSync(join(tmpdir(), 'k3s-vm-disk-')));
  await dir.ensure();
  if (record) {
    writeFileSync(dir.file(files.disk), 'a disk');
    await dir.writeJson(files.diskRecord, { createdAt: '2026-01-01T00:00:00.000Z', ...record });
  }
  return dir;
}

const config = (options: object) => resolveConfig({ projectRoot: repoRoot, ...options }, {});

describe('the disk record', () => {
  it('is written for a new disk', async () => {
    const dir = await instance();
    await checkDisk(dir, config({ name: 'vm-a', k3sVersion: '1.33', diskSizeMiB: 4096 }), recordingLogger());
    expect(JSON.parse(readFileSync(dir.file(files.diskRecord), 'utf8'))).toMatchObject({
      name: 'vm-a',
      k3sVersion: '1_33',
      diskSizeMiB: 4096,
    });
  });

  it('refuses another node name, offering reset and keeping the disk', async () => {
    const dir = await instance({ name: 'vm-a', k3sVersion: '', diskSizeMiB: 20480 });
    const error = (await checkDisk(dir, config({ name: 'vm-b' }), recordingLogger()).catch((e: unknown) => e)) as K3sVmError;
    expect(error.code).toBe('DISK_MISMATCH');
    expect(error.message).toMatch(/node "vm-a", and the VM is now named "vm-b"/);
    expect(error.hint).toMatch(/^k3s-vm reset deletes the disk/);
    expect(readFileSync(dir.file(files.disk), 'utf8')).toBe('a disk');
  });

  it('refuses a K3s downgrade and accepts an upgrade', async () => {
    const dir = await instance({ name: 'k3s-vm', k3sVersion: '1_34', diskSizeMiB: 20480 });
    const error = (await checkDisk(dir, config({ k3sVersion: '1.33' }), recordingLogger()).catch((e: unknown) => e)) as K3sVmError;
    expect(error.code).toBe('DISK_MISMATCH');
    expect(error.message).toMatch(/K3s 1\.34 datastore, and K3s 1\.33 is asked for/);
    await checkDisk(dir, config({ k3sVersion: '1.35' }), recordingLogger());
    expect(JSON.parse(readFileSync(dir.file(files.diskRecord), 'utf8')).k3sVersion).toBe('1_35');
  });

  it('warns that a new size does not reach an existing disk', async () => {
    const dir = await instance({ name: 'k3s-vm', k3sVersion: '', diskSizeMiB: 20480 });
    const logger = recordingLogger();
    await checkDisk(dir, config({ diskSizeMiB: 40960 }), logger);
    expect(logger.lines.join('\n')).toMatch(
      /^warning: the VM's disk was made with 20480 MiB and keeps that size \(40960 MiB is asked for\)/m,
    );
  });

  it('stops a start before the build', async () => {
    const dir = await instance({ name: 'test-guest', k3sVersion: '', diskSizeMiB: 2048 });
    const error = (await startCluster({
      projectRoot: repoRoot,
      dir: dir.path,
      nix: testGuestNix,
      name: 'renamed',
      accel: 'tcg',
      env: {},
    }).catch((e: unknown) => e)) as K3sVmError;
    expect(error.code).toBe('DISK_MISMATCH');
    expect(dir.exists(files.buildLink)).toBe(false);
  });
});
