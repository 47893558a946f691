// The disk outlives rebuilds: what it was made for is recorded, and a change it cannot follow is refused before anything runs.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkDisk, settleDisk } from '../../src/cluster/disk.js';
import { startCluster } from '../../src/cluster/index.js';
import { resolveConfig } from '../../src/config/resolve-config.js';
import { K3sVmError } from '../../src/errors.js';
import { files } from '../../src/state/files.js';
import { InstanceDir } from '../../src/state/instance-dir.js';
import { DiskImage } from '../../src/qemu/disk.js';
import { snapshotTag } from '../../src/qemu/snapshot.js';
import { recordingLogger, repoRoot, testGuestNix } from '../support/test-guest.js';

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

describe('checking the disk before the build', () => {
  it('takes a new disk as made for what is asked, and writes nothing yet', async () => {
    const dir = await instance();
    expect(await checkDisk(dir, config({ name: 'vm-a', k3sVersion: '1.33', diskSizeMiB: 4096 }), recordingLogger())).toMatchObject({
      previous: undefined,
      wanted: { name: 'vm-a', k3sVersion: '1_33', diskSizeMiB: 4096 },
    });
    expect(dir.exists(files.diskRecord)).toBe(false);
  });

  it('refuses another node name, offering reset and keeping the disk', async () => {
    const dir = await instance({ name: 'vm-a', k3sVersion: '', diskSizeMiB: 20480 });
    const error = (await checkDisk(dir, config({ name: 'vm-b' }), recordingLogger()).catch((e: unknown) => e)) as K3sVmError;
    expect(error.code).toBe('DISK_MISMATCH');
    expect(error.message).toMatch(/node "vm-a", and the VM is now named "vm-b"/);
    expect(error.hint).toMatch(/^k3s-vm reset deletes the disk/);
    expect(readFileSync(dir.file(files.disk), 'utf8')).toBe('a disk');
  });

  it('refuses a K3s downgrade, and accepts an upgrade without recording it before the boot', async () => {
    const dir = await instance({ name: 'k3s-vm', k3sVersion: '1_34', diskSizeMiB: 20480 });
    const error = (await checkDisk(dir, config({ k3sVersion: '1.33' }), recordingLogger()).catch((e: unknown) => e)) as K3sVmError;
    expect(error.code).toBe('DISK_MISMATCH');
    expect(error.message).toMatch(/K3s 1\.34 datastore, and K3s 1\.33 is asked for/);
    expect(await checkDisk(dir, config({ k3sVersion: '1.35' }), recordingLogger())).toMatchObject({
      previous: { k3sVersion: '1_34' },
      wanted: { k3sVersion: '1_35', createdAt: '2026-01-01T00:00:00.000Z' },
    });
    // A build or a growth that fails must not leave a record of a datastore that was never upgraded.
    expect(JSON.parse(readFileSync(dir.file(files.diskRecord), 'utf8')).k3sVersion).toBe('1_34');
  });

  it('sets a damaged record aside with a warning, keeping the disk', async () => {
    const dir = await instance({ name: 'k3s-vm', k3sVersion: '', diskSizeMiB: 2048 });
    writeFileSync(dir.file(files.diskRecord), '{ "name": "k3s-v');
    const logger = recordingLogger();
    expect(await checkDisk(dir, config({ diskSizeMiB: 4096 }), logger)).toMatchObject({
      previous: undefined,
      wanted: { diskSizeMiB: 4096 },
    });
    expect(logger.lines.join('\n')).toMatch(
      /^warning: .*disk\.json is not valid JSON: the VM's disk is taken as made for what is asked now/m,
    );
    expect(readFileSync(dir.file(files.disk), 'utf8')).toBe('a disk');
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

describe('settling the disk just before QEMU starts', () => {
  /** A state directory with a real qcow2 image of sizeMiB (and, unless told, its record); qemu-img from PATH (no run script). */
  async function imageOf(sizeMiB: number, withRecord = true) {
    const dir = await instance();
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', dir.file(files.disk), `${sizeMiB}M`]);
    if (withRecord) {
      await dir.writeJson(files.diskRecord, {
        name: 'k3s-vm',
        k3sVersion: '1_34',
        diskSizeMiB: sizeMiB,
        createdAt: '2026-01-01T00:00:00.000Z',
      });
    }
    return { dir, image: await imageWith(dir) };
  }
  /** The state directory's disk image, with qemu-img found on pathVariable (there is no run script). */
  const imageWith = (dir: InstanceDir, pathVariable = process.env['PATH']) =>
    DiskImage.of(dir.file(files.disk), join(dir.path, 'no-run-script'), pathVariable, dir.dirName);
  const virtualSize = (path: string) =>
    (JSON.parse(execFileSync('qemu-img', ['info', '--output=json', '-U', path], { encoding: 'utf8' })) as { 'virtual-size': number })[
      'virtual-size'
    ];
  const recordOf = (dir: InstanceDir) =>
    JSON.parse(readFileSync(dir.file(files.diskRecord), 'utf8')) as { diskSizeMiB: number; k3sVersion: string };
  const MiB = 1024 * 1024;
  /**
   * A test double in front of the real qemu-img, in a folder of its own (the PATH to hand
   * settleDisk): `subcommand` runs the shell `action` instead, every other subcommand is the
   * real one's.
   */
  function qemuImgDouble(dir: InstanceDir, subcommand: string, action: string): string {
    const bin = join(dir.path, 'bin');
    mkdirSync(bin);
    const realQemuImg = execFileSync('sh', ['-c', 'command -v qemu-img'], { encoding: 'utf8' }).trim();
    writeFileSync(join(bin, 'qemu-img'), `#!/bin/sh\n[ "$1" != ${subcommand} ] || { ${action}; }\nexec ${realQemuImg} "$@"\n`, {
      mode: 0o755,
    });
    return bin;
  }

  it('records what a new disk is made for', async () => {
    const dir = await instance();
    const wanted = await checkDisk(dir, config({ name: 'vm-a', diskSizeMiB: 4096 }), recordingLogger());
    await settleDisk(dir, wanted, await imageWith(dir), recordingLogger());
    expect(recordOf(dir)).toMatchObject({ name: 'vm-a', diskSizeMiB: 4096 });
  });

  it('runs no qemu-img when the record already has the size asked for, and records a K3s upgrade', async () => {
    const { dir } = await imageOf(2048);
    const logger = recordingLogger();
    // No qemu-img anywhere: had it been needed, the warning would say so.
    await settleDisk(
      dir,
      await checkDisk(dir, config({ diskSizeMiB: 2048, k3sVersion: '1.35' }), logger),
      await imageWith(dir, '/nonexistent'),
      logger,
    );
    expect(logger.lines).toEqual([]);
    expect(recordOf(dir)).toMatchObject({ diskSizeMiB: 2048, k3sVersion: '1_35' });
  });

  it('grows a smaller image with qemu-img, then records the size and the K3s version', async () => {
    const { dir, image } = await imageOf(2048);
    const logger = recordingLogger();
    await settleDisk(dir, await checkDisk(dir, config({ diskSizeMiB: 4096, k3sVersion: '1.35' }), recordingLogger()), image, logger);
    expect(virtualSize(dir.file(files.disk))).toBe(4096 * MiB);
    expect(recordOf(dir)).toMatchObject({ diskSizeMiB: 4096, k3sVersion: '1_35' });
    expect(logger.lines).toEqual(["growing the VM's disk from 2048 MiB to 4096 MiB (its file system follows at boot)"]);
  });

  it('deletes a snapshot saved on the smaller disk before growing it', async () => {
    const { dir, image } = await imageOf(2048);
    execFileSync('qemu-img', ['snapshot', '-c', snapshotTag, dir.file(files.disk)]);
    writeFileSync(dir.file(files.snapshotRecord), '{}');
    const logger = recordingLogger();
    await settleDisk(dir, await checkDisk(dir, config({ diskSizeMiB: 4096 }), recordingLogger()), image, logger);
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', dir.file(files.disk)], { encoding: 'utf8' })) as {
      snapshots?: unknown[];
    };
    expect(info.snapshots ?? []).toEqual([]);
    expect(dir.exists(files.snapshotRecord)).toBe(false);
    expect(virtualSize(dir.file(files.disk))).toBe(4096 * MiB);
    expect(logger.lines[0]).toBe("deleted the VM's snapshot: it was saved on the disk before its growth");
  });

  it("grows a disk that has no record, by the image's own size", async () => {
    const { dir, image } = await imageOf(2048, false);
    await settleDisk(dir, await checkDisk(dir, config({ diskSizeMiB: 3072 }), recordingLogger()), image, recordingLogger());
    expect(virtualSize(dir.file(files.disk))).toBe(3072 * MiB);
    expect(recordOf(dir).diskSizeMiB).toBe(3072);
  });

  it('keeps a larger image as it is, with a warning, and records its real size', async () => {
    const { dir, image } = await imageOf(4096);
    const logger = recordingLogger();
    await settleDisk(dir, await checkDisk(dir, config({ diskSizeMiB: 2048 }), recordingLogger()), image, logger);
    expect(virtualSize(dir.file(files.disk))).toBe(4096 * MiB);
    expect(logger.lines.join('\n')).toMatch(
      /^warning: the VM's disk has 4096 MiB and keeps that size \(2048 MiB is asked for\): a disk is never shrunk/m,
    );
    expect(recordOf(dir).diskSizeMiB).toBe(4096);
  });

  it('reports a damaged image as damaged, leaving the image and the record as they were', async () => {
    const { dir, image } = await imageOf(2048);
    writeFileSync(dir.file(files.disk), Buffer.alloc(4096, 7));
    const error = (await settleDisk(
      dir,
      await checkDisk(dir, config({ diskSizeMiB: 4096 }), recordingLogger()),
      image,
      recordingLogger(),
    ).catch((e: unknown) => e)) as K3sVmError;
    expect(error.code).toBe('DISK_DAMAGED');
    expect(readFileSync(dir.file(files.disk))).toEqual(Buffer.alloc(4096, 7));
    expect(recordOf(dir)).toMatchObject({ diskSizeMiB: 2048, k3sVersion: '1_34' });
  });

  it('refuses, naming what qemu-img said and the way back, when the image cannot be grown', async () => {
    const { dir } = await imageOf(2048);
    const bin = qemuImgDouble(dir, 'resize', 'echo "qemu-img: no space left on device" >&2; exit 1');
    const wanted = await checkDisk(dir, config({ diskSizeMiB: 4096, k3sVersion: '1.35' }), recordingLogger());
    const error = (await settleDisk(dir, wanted, await imageWith(dir, bin), recordingLogger()).catch((e: unknown) => e)) as K3sVmError;
    expect(error.code).toBe('DISK_GROW_FAILED');
    expect(error.message).toMatch(/could not grow the VM's disk .* from 2048 MiB to 4096 MiB; it was left as it is/);
    expect(error.details).toMatch(/no space left on device/);
    // The size was given as an option: the remedy is written as one.
    expect(error.hint).toMatch(/start with the disk's size \(diskSizeMiB: 2048\) to use it as it is/);
    expect(virtualSize(dir.file(files.disk))).toBe(2048 * MiB);
    expect(recordOf(dir)).toMatchObject({ diskSizeMiB: 2048, k3sVersion: '1_34' });
  });

  it('refuses an image whose size qemu-img cannot tell, naming it', async () => {
    const { dir } = await imageOf(2048);
    const bin = qemuImgDouble(dir, 'info', "echo '{}'; exit 0");
    const error = (await settleDisk(
      dir,
      await checkDisk(dir, config({ diskSizeMiB: 4096 }), recordingLogger()),
      await imageWith(dir, bin),
      recordingLogger(),
    ).catch((e: unknown) => e)) as K3sVmError;
    expect(error.code).toBe('DISK_DAMAGED');
    expect(error.message).toMatch(/the size of the VM's disk image .* cannot be read/);
    expect(error.details).toBe('qemu-img info gives no size (virtual-size: undefined)');
    expect(virtualSize(dir.file(files.disk))).toBe(2048 * MiB);
  });

  it('says what to install when no qemu-img is at hand, and leaves the image as it is', async () => {
    const { dir } = await imageOf(2048);
    const logger = recordingLogger();
    await settleDisk(
      dir,
      await checkDisk(dir, config({ diskSizeMiB: 4096 }), recordingLogger()),
      await imageWith(dir, '/nonexistent'),
      logger,
    );
    expect(logger.lines.join('\n')).toMatch(
      /^warning: the VM's disk was neither checked against the 4096 MiB asked for nor grown: .* install qemu-img \(Debian: qemu-utils\)/m,
    );
    expect(virtualSize(dir.file(files.disk))).toBe(2048 * MiB);
    expect(recordOf(dir).diskSizeMiB).toBe(2048);
  });
});
