// The disk outlives rebuilds: what it was made for is recorded, and a change it cannot follow is refused before anything runs.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkDisk, growDisk } from '../../src/cluster/disk.js';
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

  it('returns a larger size as growth, and keeps (with a warning) a disk larger than asked for', async () => {
    const dir = await instance({ name: 'k3s-vm', k3sVersion: '', diskSizeMiB: 20480 });
    const logger = recordingLogger();
    const growth = await checkDisk(dir, config({ diskSizeMiB: 40960 }), logger);
    expect(growth).toMatchObject({ record: { diskSizeMiB: 20480 }, toMiB: 40960 });
    expect(logger.lines).toEqual([]);
    expect(await checkDisk(dir, config({ diskSizeMiB: 20480 }), logger)).toBeUndefined();
    expect(await checkDisk(dir, config({ diskSizeMiB: 10240 }), logger)).toBeUndefined();
    expect(logger.lines.join('\n')).toMatch(
      /^warning: the VM's disk has 20480 MiB and keeps that size \(10240 MiB is asked for\): a disk is never shrunk/m,
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

describe('growing the disk', () => {
  /** A real qcow2 image of sizeMiB in a new state directory, with its record; qemu-img from PATH (no run script). */
  async function imageOf(sizeMiB: number) {
    const dir = await instance();
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', dir.file(files.disk), `${sizeMiB}M`]);
    await dir.writeJson(files.diskRecord, { name: 'k3s-vm', k3sVersion: '', diskSizeMiB: sizeMiB, createdAt: '2026-01-01T00:00:00.000Z' });
    const growth = await checkDisk(dir, config({ diskSizeMiB: sizeMiB * 2 }), recordingLogger());
    const build = { runScript: join(dir.path, 'no-run-script'), pathVariable: process.env['PATH'] };
    return { dir, growth: growth!, build };
  }
  const virtualSize = (path: string) =>
    (JSON.parse(execFileSync('qemu-img', ['info', '--output=json', '-U', path], { encoding: 'utf8' })) as { 'virtual-size': number })[
      'virtual-size'
    ];
  const recordOf = (dir: InstanceDir) => JSON.parse(readFileSync(dir.file(files.diskRecord), 'utf8')) as { diskSizeMiB: number };

  it('grows the image with qemu-img and then records the new size', async () => {
    const { dir, growth, build } = await imageOf(2048);
    const logger = recordingLogger();
    await growDisk(dir, growth, build, logger);
    expect(virtualSize(dir.file(files.disk))).toBe(4096 * 1024 * 1024);
    expect(recordOf(dir).diskSizeMiB).toBe(4096);
    expect(logger.lines).toEqual(["growing the VM's disk from 2048 MiB to 4096 MiB (its file system follows at boot)"]);
  });

  it('reports a damaged image as damaged, leaving the image and the record as they were', async () => {
    const { dir, growth, build } = await imageOf(2048);
    writeFileSync(dir.file(files.disk), Buffer.alloc(4096, 7));
    const error = (await growDisk(dir, growth, build, recordingLogger()).catch((e: unknown) => e)) as K3sVmError;
    expect(error.code).toBe('DISK_DAMAGED');
    expect(readFileSync(dir.file(files.disk))).toEqual(Buffer.alloc(4096, 7));
    expect(recordOf(dir).diskSizeMiB).toBe(2048);
  });

  it('refuses with the way back when qemu-img cannot grow the image', async () => {
    const { dir, growth, build } = await imageOf(2048);
    // A test double in front of the real qemu-img: checks pass through, resize fails.
    const bin = join(dir.path, 'bin');
    mkdirSync(bin);
    const realQemuImg = execFileSync('sh', ['-c', 'command -v qemu-img'], { encoding: 'utf8' }).trim();
    writeFileSync(
      join(bin, 'qemu-img'),
      `#!/bin/sh\n[ "$1" != resize ] || { echo "qemu-img: no space left on device" >&2; exit 1; }\nexec ${realQemuImg} "$@"\n`,
      { mode: 0o755 },
    );
    const error = (await growDisk(dir, growth, { ...build, pathVariable: bin }, recordingLogger()).catch((e: unknown) => e)) as K3sVmError;
    expect(error.code).toBe('DISK_MISMATCH');
    expect(error.message).toMatch(/could not grow the VM's disk .* from 2048 MiB to 4096 MiB; it was left as it is/);
    expect(error.details).toMatch(/no space left on device/);
    expect(error.hint).toMatch(/^start with the disk's size \(K3S_VM_DISK_SIZE=2048\)/);
    expect(virtualSize(dir.file(files.disk))).toBe(2048 * 1024 * 1024);
    expect(recordOf(dir).diskSizeMiB).toBe(2048);
  });

  it('keeps the size, with a warning, when no qemu-img is at hand', async () => {
    const { dir, growth, build } = await imageOf(2048);
    const logger = recordingLogger();
    await growDisk(dir, growth, { ...build, pathVariable: '/nonexistent' }, logger);
    expect(logger.lines.join('\n')).toMatch(
      /^warning: the VM's disk keeps its 2048 MiB \(4096 MiB is asked for\): growing it needs qemu-img/,
    );
    expect(virtualSize(dir.file(files.disk))).toBe(2048 * 1024 * 1024);
    expect(recordOf(dir).diskSizeMiB).toBe(2048);
  });
});
