// A damaged disk image is refused by name before QEMU opens it, and a disk the guest cannot mount stops the boot.
import { execFileSync } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startCluster, stopCluster } from '../../src/cluster/index.js';
import { files } from '../../src/state/files.js';
import { qemuProcessesUsing } from '../support/consumer.js';
import { testGuestOptions } from '../support/test-guest.js';
import { seededStateDir } from '../support/seeded-state-dir.js';

const opts = testGuestOptions('faults-disk', { dir: seededStateDir('faults-disk') });
const disk = join(opts.dir, files.disk);
afterAll(async () => {
  await stopCluster({ ...opts, force: true }).catch(() => undefined);
});

async function refused(): Promise<{ code?: string; message: string; hint?: string; details?: string }> {
  const error = await startCluster(opts).then(
    async (cluster) => {
      await cluster.stop();
      return new Error('the cluster started');
    },
    (e: unknown) => e,
  );
  expect(qemuProcessesUsing(opts.dir)).toEqual([]);
  return error as { code?: string; message: string; hint?: string };
}

describe('a damaged disk image', () => {
  it('is refused (empty, overwritten, corrupted) or stops the boot (not mountable), is never deleted, and the error offers reset', async () => {
    writeFileSync(disk, '');
    const empty = await refused();
    expect(empty).toMatchObject({ code: 'DISK_DAMAGED' });
    expect(empty.message).toContain(`${disk} is empty (0 bytes)`);
    expect(empty.hint).toMatch(/k3s-vm reset/);
    expect(statSync(disk).size).toBe(0);

    writeFileSync(disk, Buffer.alloc(65_536, 0xab));
    const overwritten = await refused();
    expect(overwritten).toMatchObject({ code: 'DISK_DAMAGED' });
    expect(overwritten.message).toContain(`${disk} is not a qcow2 image`);
    expect(readFileSync(disk)).toEqual(Buffer.alloc(65_536, 0xab));

    // A qcow2 header whose tables point past the end of the file.
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '64M']);
    const image = readFileSync(disk);
    image.writeBigUInt64BE(0x7fff_0000n, 40); // l1_table_offset
    writeFileSync(disk, image);
    const corrupted = await refused();
    expect(corrupted).toMatchObject({ code: 'DISK_DAMAGED' });
    expect(corrupted.message).toContain(disk);

    // A sound image whose content is no file system the guest can mount: the guest stops the boot.
    const raw = join(opts.dir, 'tmp-raw');
    writeFileSync(raw, Buffer.alloc(4 * 1024 * 1024, 0xab));
    execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, disk]);
    const unmountable = await refused();
    expect(unmountable).toMatchObject({ code: 'QEMU_EXITED' });
    expect(unmountable.details).toMatch(/ERROR: .*not an ext file system/);
    expect(unmountable.details).toMatch(/k3s-vm reset/);
    expect(statSync(disk).size).toBeGreaterThan(0);
  });
});
