// The snapshot's pure parts: what makes it unrestorable, and reading qemu-img's list of snapshots.
import { describe, expect, it } from 'vitest';
import {
  parseInternalSnapshots,
  restoreOptions,
  snapshotTag,
  whyNotRestorable,
  type SnapshotKey,
  type SnapshotRecord,
} from '../../src/qemu/snapshot.js';

const key: SnapshotKey = {
  storePath: '/nix/store/aaaa-test-guest',
  qemuVersion: 'QEMU emulator version 7.2.22',
  memoryMiB: 1024,
  cpus: 2,
  accel: 'tcg',
  kernelParams: '',
  sshPublicKey: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOne k3s-vm@test-guest',
};
const inDisk = [{ id: '1', name: snapshotTag, vmStateBytes: 155_000_000, dateSec: 1_790_000_000, dateNsec: 5 }];
const record: SnapshotRecord = {
  tag: snapshotTag,
  key,
  machine: 'pc-i440fx-7.2-machine',
  disk: inDisk[0]!,
  savedAt: '2026-11-26T03:00:00.000Z',
  saveMs: 400,
};

describe('whether a snapshot can be restored', () => {
  it('is restorable when the key and the disk entry match', () => {
    expect(whyNotRestorable(record, key, inDisk)).toBeUndefined();
  });

  it.each([
    ['storePath', '/nix/store/bbbb-test-guest'],
    ['qemuVersion', 'QEMU emulator version 8.2.0'],
    ['memoryMiB', 2048],
    ['cpus', 4],
    ['accel', 'kvm'],
    ['kernelParams', 'k3s_fake.node_ready_delay_ms=5'],
    ['sshPublicKey', 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITwo k3s-vm@test-guest'],
  ] as const)('is not when %s differs, and the reason names it with both values', (field, value) => {
    const reason = whyNotRestorable(record, { ...key, [field]: value }, inDisk);
    expect(reason).toContain(`${field}: ${String(key[field])} → ${String(value)}`);
  });

  it('is not when the disk lacks it, holds another one of the same name, or has it without a record', () => {
    expect(whyNotRestorable(record, key, [])).toMatch(/missing from the disk image/);
    expect(whyNotRestorable(record, key, [{ ...inDisk[0]!, dateNsec: 6 }])).toMatch(/another snapshot than the one recorded/);
    expect(whyNotRestorable(record, key, [{ ...inDisk[0]!, id: '2' }])).toMatch(/another snapshot/);
    expect(whyNotRestorable(undefined, key, inDisk)).toMatch(/without a record/);
    expect(whyNotRestorable(undefined, key, [])).toBe('there is no snapshot yet');
  });

  it('is not when the record is damaged', () => {
    expect(whyNotRestorable({ ...record, key: null } as unknown as SnapshotRecord, key, inDisk)).toMatch(/damaged/);
    expect(whyNotRestorable({ ...record, tag: 'other' }, key, inDisk)).toMatch(/damaged/);
  });
});

describe('qemu-img info', () => {
  it('lists internal snapshots with their VM state size and date', () => {
    const text = JSON.stringify({
      format: 'qcow2',
      snapshots: [
        {
          id: '1',
          name: snapshotTag,
          'vm-state-size': 155_171_374,
          'date-sec': 1_795_000_000,
          'date-nsec': 123,
          'vm-clock-sec': 10,
          'vm-clock-nsec': 0,
        },
      ],
    });
    expect(parseInternalSnapshots(text)).toEqual([
      { id: '1', name: snapshotTag, vmStateBytes: 155_171_374, dateSec: 1_795_000_000, dateNsec: 123 },
    ]);
    expect(parseInternalSnapshots(JSON.stringify({ format: 'qcow2' }))).toEqual([]);
  });

  it('restores through QEMU_OPTS with -loadvm and a tag without spaces', () => {
    expect(restoreOptions()).toEqual(['-loadvm', snapshotTag]);
    expect(snapshotTag).not.toMatch(/\s/);
  });
});
