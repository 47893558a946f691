// What the persistent disk was made for: a disk outlives rebuilds, so a change it cannot follow is refused, never papered over.
import type { ResolvedConfig } from '../config/options.js';
import { K3sVmError } from '../errors.js';
import type { Logger } from '../log.js';
import { files } from '../state/files.js';
import type { InstanceDir } from '../state/instance-dir.js';

/** Recorded when a boot is about to create the disk. */
export interface DiskRecord {
  /** The node name K3s registered on this disk; another name leaves that node NotReady for ever. */
  readonly name: string;
  /** The K3s minor asked for ('' for nixpkgs' default): K3s upgrades a datastore, it cannot downgrade one. */
  readonly k3sVersion: string;
  /** The size the disk was created with (the run script creates it once; a new size does not reach it). */
  readonly diskSizeMiB: number;
  readonly createdAt: string;
}

function minor(version: string): [number, number] | undefined {
  const match = /^(\d+)_(\d+)$/.exec(version);
  return match ? [Number(match[1]), Number(match[2])] : undefined;
}

const resetHint = (dir: InstanceDir) =>
  `k3s-vm reset deletes the disk (the cluster's state) so the next start makes a new one; or go back to the old setting, or use another state directory (K3S_VM_DIR) for the new one; the disk is ${dir.file(files.disk)}`;

/**
 * Before a boot: refuses a disk made for another node name or a newer K3s, warns when its
 * size differs from the one asked for, and records what a new disk is made for.
 */
export async function checkDisk(dir: InstanceDir, config: ResolvedConfig, logger: Logger): Promise<void> {
  const wanted: DiskRecord = {
    name: config.name,
    k3sVersion: config.k3sVersion,
    diskSizeMiB: config.diskSizeMiB,
    createdAt: new Date().toISOString(),
  };
  if (!dir.exists(files.disk)) {
    await dir.writeJson(files.diskRecord, wanted);
    return;
  }
  const record = await dir.readJson<DiskRecord>(files.diskRecord).catch(() => undefined);
  if (!record) {
    // A disk from before records were kept: take it as made for what is asked now.
    await dir.writeJson(files.diskRecord, wanted);
    return;
  }
  if (record.name !== config.name) {
    throw new K3sVmError(
      'DISK_MISMATCH',
      `the VM's disk holds the cluster of node "${record.name}", and the VM is now named "${config.name}": K3s would keep the old node, NotReady for ever`,
      {
        hint: resetHint(dir),
      },
    );
  }
  const before = minor(record.k3sVersion);
  const after = minor(config.k3sVersion);
  if (before && after && (after[0] < before[0] || (after[0] === before[0] && after[1] < before[1]))) {
    throw new K3sVmError(
      'DISK_MISMATCH',
      `the VM's disk holds a K3s ${before.join('.')} datastore, and K3s ${after.join('.')} is asked for: K3s cannot downgrade a datastore`,
      {
        hint: resetHint(dir),
      },
    );
  }
  if (record.diskSizeMiB !== config.diskSizeMiB) {
    logger.warn(
      `the VM's disk was made with ${record.diskSizeMiB} MiB and keeps that size (${config.diskSizeMiB} MiB is asked for); ` +
        'k3s-vm reset makes a new disk of the new size (the cluster starts empty)',
    );
  }
  if (record.k3sVersion !== config.k3sVersion) await dir.writeJson(files.diskRecord, { ...record, k3sVersion: config.k3sVersion });
}
