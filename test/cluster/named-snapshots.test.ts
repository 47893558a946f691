// The pure parts of named snapshots and rewinds: which names are taken, the workload comparison, and the rewind option.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkSnapshotName, snapshotRecordFile } from '../../src/cluster/named-snapshots.js';
import { resolveConfig } from '../../src/config/resolve-config.js';
import { isK3sVmError } from '../../src/errors.js';
import { sameWorkload, snapshotTag } from '../../src/qemu/snapshot.js';

const project = mkdtempSync(join(tmpdir(), 'k3s-vm-named-'));

describe('snapshot names', () => {
  it.each(['after-setup', 'v1.2_ok', 'A', '9lives', 'x'.repeat(63)])('takes %s', (name) => {
    expect(() => checkSnapshotName(name, 'save')).not.toThrow();
  });

  it.each([
    ['', '1 to 63 letters'],
    ['x'.repeat(64), '1 to 63 letters'],
    ['has space', '1 to 63 letters'],
    ['a/b', '1 to 63 letters'],
    ['.hidden', '1 to 63 letters'],
    ['42', 'all digits'],
    ['k3s-vm-mine', "k3s-vm's own"],
    [snapshotTag, "k3s-vm's own"],
  ])('refuses %j naming the rule', (name, rule) => {
    let error: unknown;
    try {
      checkSnapshotName(name, 'save');
    } catch (caught) {
      error = caught;
    }
    expect(isK3sVmError(error, 'CONFIG_INVALID')).toBe(true);
    expect((error as Error).message).toContain(`invalid snapshot name ${JSON.stringify(name)}`);
    expect((error as Error).message).toContain(rule);
  });

  it('restores the automatic snapshot by its name, which no save or rm may take', () => {
    expect(() => checkSnapshotName(snapshotTag, 'restore')).not.toThrow();
    expect(() => checkSnapshotName(snapshotTag, 'rm')).toThrow(/k3s-vm's own/);
    expect(snapshotRecordFile(snapshotTag)).toBe('snapshot.json');
    expect(snapshotRecordFile('after-setup')).toBe('snapshots/after-setup.json');
  });
});

describe("a snapshot's workload", () => {
  const workload = { images: ['a'], manifests: ['m1', 'm2'], waitForRollout: false };
  it('is the same only with the same digests in the same order and the same rollout wait', () => {
    expect(sameWorkload(workload, { ...workload })).toBe(true);
    expect(sameWorkload(undefined, workload)).toBe(false);
    expect(sameWorkload(workload, { ...workload, manifests: ['m2', 'm1'] })).toBe(false);
    expect(sameWorkload(workload, { ...workload, images: ['b'] })).toBe(false);
    expect(sameWorkload(workload, { ...workload, waitForRollout: true })).toBe(false);
  });
});

describe('the rewind option', () => {
  it('takes off and file, and needs snapshots', () => {
    expect(resolveConfig({}, {}, project).rewind).toBe('off');
    expect(resolveConfig({}, { K3S_VM_REWIND: 'file', K3S_VM_SNAPSHOT: '1' }, project).rewind).toBe('file');
    expect(() => resolveConfig({}, { K3S_VM_REWIND: 'test', K3S_VM_SNAPSHOT: '1' }, project)).toThrow(/K3S_VM_REWIND.*off or file/);
    expect(() => resolveConfig({ rewind: 'file' }, {}, project)).toThrow(
      /option rewind=file rewinds the VM to its snapshot, but snapshots are off \(K3S_VM_SNAPSHOT is not on\)/,
    );
  });
});
