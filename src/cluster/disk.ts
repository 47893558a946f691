// What the persistent disk was made for: a disk outlives rebuilds, so a change it cannot follow is refused, never papered over; a larger size is grown into it.
import { setting } from '../config/names.js';
import type { ResolvedConfig } from '../config/options.js';
import { K3sVmError } from '../errors.js';
import type { Logger } from '../log.js';
import type { DiskImage } from '../qemu/disk.js';
import { files } from '../state/files.js';
import type { InstanceDir } from '../state/instance-dir.js';
import { removeSnapshot } from './snapshot.js';

/** disk.json: written just before QEMU starts on the disk. */
export interface DiskRecord {
  /** The node name K3s registered on this disk; another name leaves that node NotReady for ever. */
  readonly name: string;
  /** The K3s minor last started on it ('' for nixpkgs' default): K3s upgrades a datastore, it cannot downgrade one. */
  readonly k3sVersion: string;
  /** The image's size when last checked (a new disk: the size the run script creates it with). */
  readonly diskSizeMiB: number;
  readonly createdAt: string;
}

const mib = 1024 * 1024;

function minor(version: string): [number, number] | undefined {
  const match = /^(\d+)_(\d+)$/.exec(version);
  return match ? [Number(match[1]), Number(match[2])] : undefined;
}

const resetHint = (dir: InstanceDir, names: ResolvedConfig['names']) =>
  `k3s-vm reset deletes the disk (the cluster's state) so the next start makes a new one; or go back to the old setting, or use another state directory (${names.dir}) for the new one; the disk is ${dir.file(files.disk)}`;

/** What checkDisk found: the record the disk had, and the one settleDisk writes once the boot is about to start. */
export interface DiskPlan {
  readonly previous: DiskRecord | undefined;
  readonly wanted: DiskRecord;
  /** How the messages name the options (the config's names). */
  readonly names: ResolvedConfig['names'];
}

/** The disk's record; a damaged one is set aside with a warning (it is only ever rewritten, the disk is kept). */
async function readRecord(dir: InstanceDir, logger: Logger): Promise<DiskRecord | undefined> {
  try {
    return await dir.readJson<DiskRecord>(files.diskRecord);
  } catch (error) {
    logger.warn(
      `${(error as Error).message}: the VM's disk is taken as made for what is asked now, and ${dir.file(files.diskRecord)} is written anew before the boot`,
    );
    return undefined;
  }
}

/**
 * Before a boot (and before the build): refuses a disk made for another node name or a newer
 * K3s. Writes nothing: returns what the disk is made for once this boot starts, which
 * settleDisk records.
 */
export async function checkDisk(dir: InstanceDir, config: ResolvedConfig, logger: Logger): Promise<DiskPlan> {
  const record = dir.exists(files.disk) ? await readRecord(dir, logger) : undefined;
  const wanted: DiskRecord = {
    name: config.name,
    k3sVersion: config.k3sVersion,
    diskSizeMiB: config.diskSizeMiB,
    createdAt: record?.createdAt ?? new Date().toISOString(),
  };
  // No record: a new disk, or one from before records were kept, taken as made for what is asked now.
  if (!record) return { previous: undefined, wanted, names: config.names };
  if (record.name !== config.name) {
    throw new K3sVmError(
      'DISK_MISMATCH',
      `the VM's disk holds the cluster of node "${record.name}", and the VM is now named "${config.name}": K3s would keep the old node, NotReady for ever`,
      { hint: resetHint(dir, config.names) },
    );
  }
  const before = minor(record.k3sVersion);
  const after = minor(config.k3sVersion);
  if (before && after && (after[0] < before[0] || (after[0] === before[0] && after[1] < before[1]))) {
    throw new K3sVmError(
      'DISK_MISMATCH',
      `the VM's disk holds a K3s ${before.join('.')} datastore, and K3s ${after.join('.')} is asked for: K3s cannot downgrade a datastore`,
      { hint: resetHint(dir, config.names) },
    );
  }
  return { previous: record, wanted, names: config.names };
}

/**
 * Just before QEMU starts (the build is there, and with it qemu-img): grows an existing disk
 * image that is smaller than asked for (the guest grows its file system at boot: the root
 * file system's autoResize in nix/vm.nix), keeps one that is larger (with a warning: a disk
 * is never shrunk), and records what the disk is now made for. Unless the record already
 * says the image has the size asked for, the size is the image's own, so a disk without a
 * record grows too.
 */
export async function settleDisk(dir: InstanceDir, { previous, wanted, names }: DiskPlan, image: DiskImage, logger: Logger): Promise<void> {
  const disk = image.path;
  if (!dir.exists(files.disk)) {
    await dir.writeJson(files.diskRecord, wanted);
    return;
  }
  // The usual boot: the record holds the image's size as last checked, and it is the size asked
  // for; no qemu-img is run (QEMU's launch checks the image anyway).
  if (previous?.diskSizeMiB === wanted.diskSizeMiB) {
    if (previous.k3sVersion !== wanted.k3sVersion) await dir.writeJson(files.diskRecord, wanted);
    return;
  }
  if (!image.tools.qemuImg) {
    logger.warn(
      `the VM's disk was neither checked against the ${wanted.diskSizeMiB} MiB asked for nor grown: that needs qemu-img, ` +
        "which is neither beside the run script's QEMU nor on PATH; install qemu-img (Debian: qemu-utils) and start again",
    );
    await dir.writeJson(files.diskRecord, { ...wanted, diskSizeMiB: previous?.diskSizeMiB ?? wanted.diskSizeMiB });
    return;
  }
  let sizeMiB = await imageSizeMiB(image);
  if (sizeMiB < wanted.diskSizeMiB) {
    await image.check();
    // A snapshot saved on the smaller disk is stale (the size is part of the build it is keyed
    // by), and a qemu-img older than QEMU 5.1 refuses to resize an image that holds one.
    if (await removeSnapshot({ dir, image })) {
      logger.progress("deleted the VM's snapshot: it was saved on the disk before its growth");
    }
    logger.progress(`growing the VM's disk from ${sizeMiB} MiB to ${wanted.diskSizeMiB} MiB (its file system follows at boot)`);
    try {
      await image.grow(wanted.diskSizeMiB);
    } catch (error) {
      throw new K3sVmError(
        'DISK_GROW_FAILED',
        `could not grow the VM's disk ${disk} from ${sizeMiB} MiB to ${wanted.diskSizeMiB} MiB; it was left as it is`,
        {
          details: (error as Error).message,
          hint: `deal with what the details say and start again; or start with the disk's size (${setting(names, 'diskSizeMiB', sizeMiB)}) to use it as it is`,
        },
      );
    }
    sizeMiB = wanted.diskSizeMiB;
  } else if (sizeMiB > wanted.diskSizeMiB) {
    logger.warn(
      `the VM's disk has ${sizeMiB} MiB and keeps that size (${wanted.diskSizeMiB} MiB is asked for): a disk is never shrunk, ` +
        "that could cut off the cluster's data; k3s-vm reset makes a new disk of the new size (the cluster starts empty)",
    );
  }
  await dir.writeJson(files.diskRecord, { ...wanted, diskSizeMiB: sizeMiB });
}

/** The disk image's size in whole MiB, as qemu-img info gives it; a damaged image is reported as such. */
async function imageSizeMiB(image: DiskImage): Promise<number> {
  const disk = image.path;
  let size: unknown;
  let problem: string;
  try {
    size = (JSON.parse(await image.info()) as { 'virtual-size'?: unknown })['virtual-size'];
    problem = `qemu-img info gives no size (virtual-size: ${JSON.stringify(size)})`;
  } catch (error) {
    problem = (error as Error).message;
  }
  if (typeof size === 'number' && Number.isSafeInteger(size) && size > 0) return Math.floor(size / mib);
  await image.check();
  throw new K3sVmError(
    'DISK_DAMAGED',
    `the size of the VM's disk image ${disk} cannot be read; the VM was not started and the image was left as it is`,
    {
      details: problem,
      hint: `look at what qemu-img info -f qcow2 ${disk} says; if the cluster state on the disk does not matter, npx k3s-vm reset deletes it`,
    },
  );
}
