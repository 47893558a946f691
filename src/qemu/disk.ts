// The VM's disk image and what qemu-img does with it: checked before every launch (a damaged image is refused by name instead of booting without state), grown, and its internal snapshots listed and deleted. One DiskImage per boot or command carries the run script's QEMU tools and the snapshot list read once.
import { setTimeout as sleep } from 'node:timers/promises';
import { open } from 'node:fs/promises';
import { execa } from 'execa';
import { K3sVmError } from '../errors.js';
import { stateIoError } from '../state/instance-dir.js';
import { parseInternalSnapshots, snapshotTag, type InternalSnapshot } from './snapshot.js';
import { qemuToolsOf, type QemuTools } from './tools.js';

/** The first four bytes of every qcow2 image. */
const qcow2Magic = Buffer.from([0x51, 0x46, 0x49, 0xfb]);

/** How long a lock left by a QEMU that is still exiting may take to go away. */
const lockReleaseWaitMs = 5000;

/**
 * QEMU arguments (passed to the run script, which hands them on) that name the root disk's
 * format: without them QEMU guesses, and takes an empty or overwritten image for a raw disk.
 * The run script's root disk is drive1: nixos/modules/virtualisation/qemu-vm.nix (read at
 * 00008e8e) names each drive `drive${idx}` with `imap1`, and `virtualisation.qemu.drives`
 * lists the root disk ("$NIX_DISK_IMAGE") first. The test guest's run script does the same.
 */
export const diskFormatArgs = ['-set', 'drive.drive1.format=qcow2'] as const;

function damaged(path: string, problem: string, details?: string): K3sVmError {
  return new K3sVmError('DISK_DAMAGED', `the VM's disk image ${path} ${problem}; the VM was not started and the image was left as it is`, {
    details,
    hint:
      `if the cluster state on it does not matter, delete it with: npx k3s-vm reset (the next start makes a new, empty disk); ` +
      `to try a repair instead: qemu-img check -r all -f qcow2 ${path} (keep a copy first)`,
  });
}

const qemuImgRun = (qemuImg: string, args: readonly string[]) => execa(qemuImg, args, { reject: false, all: true, env: { LC_ALL: 'C' } });

/** The VM's qcow2 disk image, with the QEMU tools of the run script that boots it. */
export class DiskImage {
  #snapshots: Promise<InternalSnapshot[]> | undefined;

  constructor(
    readonly path: string,
    readonly tools: QemuTools,
    /** How the user named the state directory, for the remedy of an unreadable image. */
    readonly dirName?: string,
  ) {}

  /** The image at path, with the tools of runScript found on PATH pathVariable. */
  static async of(path: string, runScript: string, pathVariable: string | undefined, dirName?: string): Promise<DiskImage> {
    return new DiskImage(path, await qemuToolsOf(runScript, pathVariable), dirName);
  }

  /**
   * Checks an existing image before QEMU opens it: not empty, a qcow2 header, and (when
   * qemu-img is at hand) no corruption. A missing image is fine: the run script creates it.
   * Never changes its content.
   */
  async check(): Promise<void> {
    const { path } = this;
    let handle;
    try {
      handle = await open(path, 'r');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw stateIoError(error, path, 'read', this.dirName);
    }
    try {
      const { size } = await handle.stat();
      if (size === 0) throw damaged(path, 'is empty (0 bytes)');
      const head = Buffer.alloc(4);
      await handle.read(head, 0, 4, 0);
      if (!head.equals(qcow2Magic)) throw damaged(path, 'is not a qcow2 image (its header is missing or overwritten)');
    } finally {
      await handle.close();
    }
    const { qemuImg } = this.tools;
    if (!qemuImg) return;
    let check = await qemuImgRun(qemuImg, ['check', '-f', 'qcow2', path]);
    // A QEMU that was just killed holds the image's lock until the kernel has finished tearing
    // it down: give it a moment before calling the image in use.
    for (let waited = 0; /lock/i.test(String(check.all ?? '')) && waited < lockReleaseWaitMs; waited += 100) {
      await sleep(100);
      check = await qemuImgRun(qemuImg, ['check', '-f', 'qcow2', path]);
    }
    // 0: clean; 3: leaked clusters only (harmless, space is merely not reused); 63: checks unsupported.
    if (check.exitCode === 0 || check.exitCode === 3 || check.exitCode === 63) return;
    const output = String(check.all ?? '').trim();
    if (/lock/i.test(output)) {
      throw new K3sVmError('STILL_RUNNING', `the VM's disk image ${path} is in use by another process`, {
        details: output,
        hint: `another QEMU still has it open: npx k3s-vm stop (or find it with: fuser ${path})`,
      });
    }
    throw damaged(path, check.exitCode === 2 ? 'is corrupted' : 'cannot be opened as a qcow2 image', output || undefined);
  }

  /** `qemu-img info --output=json`; --force-share reads it even while a QEMU has the image open. */
  async info(): Promise<string> {
    const result = await qemuImgRun(this.#qemuImg(), ['info', '--force-share', '--output=json', '-f', 'qcow2', this.path]);
    if (result.exitCode !== 0) throw new Error(`qemu-img info ${this.path} failed: ${String(result.stderr ?? '').trim()}`);
    return String(result.stdout);
  }

  /** Grows the image to sizeMiB (never shrinks: qemu-img refuses that without --shrink). */
  async grow(sizeMiB: number): Promise<void> {
    const result = await qemuImgRun(this.#qemuImg(), ['resize', '-f', 'qcow2', this.path, `${sizeMiB}M`]);
    if (result.exitCode !== 0) throw new Error(`qemu-img resize failed: ${String(result.all ?? '').trim()}`);
  }

  /**
   * The image's internal snapshots, read once (with --force-share, so also while QEMU has the
   * image open) and again only after a change: one made here, or one QEMU made that the caller
   * reports with changed().
   */
  snapshots(): Promise<InternalSnapshot[]> {
    // A failed read is not kept: the next call tries again.
    return (this.#snapshots ??= this.info()
      .then(parseInternalSnapshots)
      .catch((error: unknown) => {
        this.#snapshots = undefined;
        throw error;
      }));
  }

  /** Whether the image holds a snapshot of that name. */
  async hasSnapshot(tag: string = snapshotTag): Promise<boolean> {
    return (await this.snapshots()).some((entry) => entry.name === tag);
  }

  /** Deletes a snapshot (by default the ready-state one) from the image while no QEMU has it open. */
  async deleteSnapshot(tag: string = snapshotTag): Promise<void> {
    this.changed();
    const result = await qemuImgRun(this.#qemuImg(), ['snapshot', '-d', tag, this.path]);
    if (result.exitCode !== 0) throw new Error(`qemu-img snapshot -d ${tag} ${this.path} failed: ${String(result.stderr ?? '').trim()}`);
  }

  /** QEMU changed the image's snapshots (savevm, delvm): the next snapshots() reads them again. */
  changed(): void {
    this.#snapshots = undefined;
  }

  #qemuImg(): string {
    const { qemuImg } = this.tools;
    if (!qemuImg)
      throw new K3sVmError('QEMU_START_FAILED', 'qemu-img was not found beside QEMU or on PATH', {
        hint: 'install qemu-utils (Debian) or QEMU',
      });
    return qemuImg;
  }
}
