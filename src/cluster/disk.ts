// What the persistent disk was made for: a disk outlives rebuilds, so a change it cannot follow is refused, never papered over.
import type { ResolvedConfig } from '../config/options.js';
import { K3sVmError } from '../errors.js';
import type { Logger } from '../log.js';
import { checkDiskImage, findQemuImg, growDiskImage } from '../qemu/disk.js';
import { files } from '../state/files.js';
import type { InstanceDir } from '../state/instance-dir.js';

/** Recorded when a boot is about to create the disk. */
export interface DiskRecord {
  /** The node name K3s registered on this disk; another name leaves that node NotReady for ever. */
  readonly name: string;
  /** The K3s minor asked for ('' for nixpkgs' default): K3s upgrades a datastore, it cannot downgrade one. */
  readonly k3sVersion: string;
  /** The disk's size: the run script creates it once, with the size of that build; a larger size is grown into it. */
  readonly diskSizeMiB: number;
  readonly createdAt: string;
}

function minor(version: string): [number, number] | undefined {
  const match = /^(\d+)_(\d+)$/.exec(version);
  return match ? [Number(match[1]), Number(match[2])] : undefined;
}

const resetHint = (dir: InstanceDir) =>
  `k3s-vm reset deletes the disk (the cluster's state) so the next start makes a new one; or go back to the old setting, or use another state directory (K3S_VM_DIR) for the new one; the disk is ${dir.file(files.disk)}`;

/** A larger size asked for an existing disk: carried out by growDisk once the build is there (its qemu-img does it). */
export interface DiskGrowth {
  readonly record: DiskRecord;
  readonly toMiB: number;
}

/**
 * Before a boot (and before the build): refuses a disk made for another node name or a newer
 * K3s, warns that a smaller size is not applied, records what a new disk is made for, and
 * returns the growth a larger size asks for.
 */
export async function checkDisk(dir: InstanceDir, config: ResolvedConfig, logger: Logger): Promise<DiskGrowth | undefined> {
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
  const current = record.k3sVersion === config.k3sVersion ? record : { ...record, k3sVersion: config.k3sVersion };
  if (current !== record) await dir.writeJson(files.diskRecord, current);
  if (config.diskSizeMiB > record.diskSizeMiB) return { record: current, toMiB: config.diskSizeMiB };
  if (config.diskSizeMiB < record.diskSizeMiB) {
    logger.warn(
      `the VM's disk has ${record.diskSizeMiB} MiB and keeps that size (${config.diskSizeMiB} MiB is asked for): a disk is never shrunk, ` +
        "that could cut off the cluster's data; k3s-vm reset makes a new disk of the new size (the cluster starts empty)",
    );
  }
  return undefined;
}

/**
 * Grows the disk image to the size asked for, before QEMU opens it; the guest grows its file
 * system to the disk at boot (the root file system's autoResize in nix/vm.nix). The image is
 * checked first, so a damaged one is reported as such; the record follows only a grown image.
 */
export async function growDisk(
  dir: InstanceDir,
  growth: DiskGrowth,
  build: { readonly runScript: string; readonly pathVariable: string | undefined },
  logger: Logger,
): Promise<void> {
  const disk = dir.file(files.disk);
  const fromMiB = growth.record.diskSizeMiB;
  const qemuImg = await findQemuImg(build.runScript, build.pathVariable);
  if (!qemuImg) {
    logger.warn(
      `the VM's disk keeps its ${fromMiB} MiB (${growth.toMiB} MiB is asked for): growing it needs qemu-img, ` +
        "which is neither beside the run script's QEMU nor on PATH",
    );
    return;
  }
  await checkDiskImage(disk, build.runScript, build.pathVariable);
  logger.progress(`growing the VM's disk from ${fromMiB} MiB to ${growth.toMiB} MiB (its file system follows at boot)`);
  try {
    await growDiskImage(qemuImg, disk, growth.toMiB);
  } catch (error) {
    throw new K3sVmError(
      'DISK_MISMATCH',
      `could not grow the VM's disk ${disk} from ${fromMiB} MiB to ${growth.toMiB} MiB; it was left as it is`,
      {
        details: (error as Error).message,
        hint: `start with the disk's size (K3S_VM_DISK_SIZE=${fromMiB}) to keep using it as it is; ${resetHint(dir)}`,
      },
    );
  }
  await dir.writeJson(files.diskRecord, { ...growth.record, diskSizeMiB: growth.toMiB });
}
