// The VM's disk image: checked before every launch, so a damaged image is refused by name instead of booting without state.
import { setTimeout as sleep } from 'node:timers/promises';
import { open } from 'node:fs/promises';
import { execa } from 'execa';
import { K3sVmError } from '../errors.js';
import { stateIoError } from '../state/instance-dir.js';
import { qemuToolsOf } from './tools.js';

/** The first four bytes of every qcow2 image. */
const qcow2Magic = Buffer.from([0x51, 0x46, 0x49, 0xfb]);

/**
 * QEMU arguments (passed to the run script, which hands them on) that name the root disk's
 * format: without them QEMU guesses, and takes an empty or overwritten image for a raw disk.
 * The run script's root disk is drive1: nixos/modules/virtualisation/qemu-vm.nix (read at
 * 00008e8e) names each drive `drive${idx}` with `imap1`, and `virtualisation.qemu.drives`
 * lists the root disk ("$NIX_DISK_IMAGE") first. The test guest's run script does the same.
 */
/** How long a lock left by a QEMU that is still exiting may take to go away. */
const lockReleaseWaitMs = 5000;

export const diskFormatArgs = ['-set', 'drive.drive1.format=qcow2'] as const;

function damaged(path: string, problem: string, details?: string): K3sVmError {
  return new K3sVmError('DISK_DAMAGED', `the VM's disk image ${path} ${problem}; the VM was not started and the image was left as it is`, {
    details,
    hint:
      `if the cluster state on it does not matter, delete it with: npx k3s-vm reset (the next start makes a new, empty disk); ` +
      `to try a repair instead: qemu-img check -r all -f qcow2 ${path} (keep a copy first)`,
  });
}

/**
 * Checks an existing disk image before QEMU opens it: not empty, a qcow2 header, and (when
 * qemu-img is at hand) no corruption. A missing image is fine: the run script creates it.
 * Never changes its content.
 */
export async function checkDiskImage(
  path: string,
  runScript: string,
  pathVariable: string | undefined,
  /** How the user named the state directory, for the remedy of an unreadable image. */
  dirName?: string,
): Promise<void> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw stateIoError(error, path, 'read', dirName);
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
  const { qemuImg } = await qemuToolsOf(runScript, pathVariable);
  if (!qemuImg) return;
  const runCheck = () => execa(qemuImg, ['check', '-f', 'qcow2', path], { reject: false, all: true, env: { LC_ALL: 'C' } });
  let check = await runCheck();
  // A QEMU that was just killed holds the image's lock until the kernel has finished tearing
  // it down: give it a moment before calling the image in use.
  for (let waited = 0; /lock/i.test(String(check.all ?? '')) && waited < lockReleaseWaitMs; waited += 100) {
    await sleep(100);
    check = await runCheck();
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

/** Grows a qcow2 image to sizeMiB (never shrinks: qemu-img refuses that without --shrink). */
export async function growDiskImage(qemuImg: string, path: string, sizeMiB: number): Promise<void> {
  const result = await execa(qemuImg, ['resize', '-f', 'qcow2', path, `${sizeMiB}M`], { reject: false, all: true, env: { LC_ALL: 'C' } });
  if (result.exitCode !== 0) throw new Error(`qemu-img resize failed: ${String(result.all ?? '').trim()}`);
}

/** `qemu-img info --output=json` of a qcow2 image; --force-share reads it even while a QEMU has it open. */
export async function readImageInfo(qemuImg: string, path: string): Promise<string> {
  const result = await execa(qemuImg, ['info', '--force-share', '--output=json', '-f', 'qcow2', path], {
    reject: false,
    env: { LC_ALL: 'C' },
  });
  if (result.exitCode !== 0) throw new Error(`qemu-img info ${path} failed: ${String(result.stderr ?? '').trim()}`);
  return String(result.stdout);
}
