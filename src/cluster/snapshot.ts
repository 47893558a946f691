// The ready-state snapshot of an instance: whether to restore it, saving it once ready, the clock after a restore, status and removal.
import { stat, statfs } from 'node:fs/promises';
import { setting } from '../config/names.js';
import type { ResolvedConfig } from '../config/options.js';
import { K3sVmError, throwIfAborted } from '../errors.js';
import { GuestSsh, type GuestShell, type SshTarget } from '../guest/ssh.js';
import type { Logger } from '../log.js';
import { DiskImage } from '../qemu/disk.js';
import {
  deleteInternalSnapshotRunning,
  saveInternalSnapshot,
  snapshotTag,
  whyNotRestorable,
  type SnapshotKey,
  type SnapshotRecord,
  type SnapshotWorkload,
} from '../qemu/snapshot.js';
import { currentBuild } from '../nix/build-vm.js';
import { GuestAgentNotListening, guestAgentSocketOf, setGuestClockByAgent } from '../qemu/guest-agent.js';
import { QmpClient } from '../qemu/qmp.js';
import { files } from '../state/files.js';
import type { InstanceDir } from '../state/instance-dir.js';
import { withLock } from '../state/lock.js';
import { isRunning, waitForExit } from '../state/process.js';
import { deriveStatus } from '../state/status.js';
import type { ClusterOptions } from './options.js';
import { prepare, stopLockTimeoutMs } from './prepare.js';

export interface SnapshotContext {
  readonly dir: InstanceDir;
  readonly config: ResolvedConfig;
  /** The VM's disk image, with the run script's QEMU tools (found once per boot). */
  readonly image: DiskImage;
  readonly storePath: string;
  /** The key the booted guest trusts (given at its boot, src/guest/keys.ts). */
  readonly sshPublicKey: string;
  readonly accel: 'kvm' | 'tcg';
  readonly logger: Logger;
}

/** What the snapshot must have been saved from to be restored now. */
export async function wantedSnapshotKey(context: SnapshotContext): Promise<SnapshotKey> {
  const { config } = context;
  return {
    storePath: context.storePath,
    qemuVersion: await context.image.tools.version(),
    memoryMiB: config.memoryMiB,
    cpus: config.cpus,
    accel: context.accel,
    kernelParams: config.kernelParams.join(' '),
    sshPublicKey: context.sshPublicKey,
  };
}

async function readRecord(dir: InstanceDir): Promise<SnapshotRecord | undefined | 'damaged'> {
  try {
    return await dir.readJson<SnapshotRecord>(files.snapshotRecord);
  } catch {
    return 'damaged';
  }
}

/**
 * Whether this start restores the snapshot. Any doubt means a cold boot, with the reason as a
 * progress line, never a failed run; a snapshot that cannot be restored is deleted (the boot
 * then saves a new one), so the directory never holds a stale one.
 */
export async function planRestore(context: SnapshotContext): Promise<{ restore: true; record: SnapshotRecord } | { restore: false }> {
  const { dir, logger } = context;
  if (!dir.exists(files.disk)) {
    await dir.remove(files.snapshotRecord);
    return { restore: false };
  }
  let reason: string | undefined;
  let record: SnapshotRecord | undefined;
  try {
    const read = await readRecord(dir);
    const inDisk = await context.image.snapshots();
    if (read === 'damaged') reason = `${dir.file(files.snapshotRecord)} is damaged (not JSON)`;
    else {
      record = read;
      reason = whyNotRestorable(record, await wantedSnapshotKey(context), inDisk);
    }
    if (reason === undefined && record) return { restore: true, record };
    if (reason !== 'there is no snapshot yet') logger.progress(`cold boot: the snapshot is not restored because ${reason}`);
    if (inDisk.some((entry) => entry.name === snapshotTag) || dir.exists(files.snapshotRecord)) await removeSnapshot(context);
  } catch (error) {
    logger.progress(`cold boot: the snapshot could not be checked (${(error as Error).message})`);
    await removeSnapshot(context).catch(() => undefined);
  }
  return { restore: false };
}

/** Deletes the snapshot from the disk (no QEMU may have it open) and its record. */
export async function removeSnapshot(context: Pick<SnapshotContext, 'dir' | 'image'>): Promise<boolean> {
  const { dir, image } = context;
  let removed = dir.exists(files.snapshotRecord);
  if (dir.exists(files.disk) && (await image.hasSnapshot(snapshotTag))) {
    await image.deleteSnapshot(snapshotTag);
    removed = true;
  }
  await dir.remove(files.snapshotRecord);
  return removed;
}

/** What a save needs besides the context: the running QEMU, and the workload it holds. */
export interface SaveTarget {
  readonly qmpSocket: string;
  /** QEMU's pid: a save that fails is judged by whether QEMU still runs. */
  readonly pid: number;
  readonly workload?: SnapshotWorkload | undefined;
}

/**
 * Room a run needs on the state directory's file system besides the snapshot: the lease, the
 * records and the guest's own writes to its disk. Less than this after a failed save means the
 * save filled the file system.
 */
const runningRoomBytes = 32 * 1024 * 1024;

/** The bytes free on the file system that holds path (for this user); undefined when it cannot be read. */
async function freeBytes(path: string): Promise<number | undefined> {
  try {
    const fs = await statfs(path);
    return fs.bavail * fs.bsize;
  } catch {
    return undefined;
  }
}

/**
 * Saves the ready VM into its disk and records what it was saved from. The record is written
 * last, so a save cut short leaves no record, and a snapshot without one is never restored.
 *
 * The save writes up to the VM's memory into the disk image. When its file system has less free
 * than that (and the room a run needs besides), the save is not tried: the run goes on without a
 * snapshot and says so. A save that fails is judged by what is left:
 * - QEMU is gone: there is no VM to go on with, and the start ends with QEMU_EXITED (the caller
 *   cleans up the instance); a snapshot the save got to make is deleted from the closed disk.
 * - QEMU runs: a snapshot the save made (it failed after QEMU wrote it) is deleted at once with
 *   delvm. If the file system is now full, the save filled it, and the start ends with
 *   SNAPSHOT_FAILED naming it: the guest's next write to its disk, and the run's next state
 *   file, would fail. Otherwise the run goes on without a snapshot, with a warning.
 * QEMU writes the VM state into the image before it makes the snapshot's entry, and drops the
 * state from the image's active layer only once the entry is made: after a save that failed
 * before that, delvm and qemu-img snapshot -d find no entry to delete, and QEMU has no command
 * that drops the state written. The next save writes over the same place in the image, so the
 * disk does not grow by it twice.
 */
export async function saveSnapshot(context: SnapshotContext & SaveTarget): Promise<SnapshotRecord | undefined> {
  const { dir, logger } = context;
  const diskPath = dir.file(files.disk);
  const needed = context.config.memoryMiB * 1024 * 1024 + runningRoomBytes;
  const free = await freeBytes(diskPath);
  if (free !== undefined && free < needed) {
    logger.progress(
      `not saving a snapshot of the ready VM: the file system that holds ${diskPath} has ${formatMiB(free)} free, and the save writes up to the VM's memory (${context.config.memoryMiB} MiB) into it; ` +
        `the run goes on without one and the next start boots again (free space there, df -h ${dir.path}, or give the VM less memory)`,
    );
    await dir.remove(files.snapshotRecord);
    return undefined;
  }
  const started = Date.now();
  try {
    await dir.remove(files.snapshotRecord);
    const key = await wantedSnapshotKey(context);
    logger.progress(`saving the ready VM into ${diskPath} (the VM pauses for the save)`);
    context.image.changed();
    const { machine } = await saveInternalSnapshot(context.qmpSocket);
    const saveMs = Date.now() - started;
    const inDisk = await context.image.snapshots();
    const disk = inDisk.find((entry) => entry.name === snapshotTag);
    if (!disk) throw new Error(`QEMU reported no error, but the disk holds no snapshot ${snapshotTag}`);
    const { workload } = context;
    const record: SnapshotRecord = {
      tag: snapshotTag,
      key,
      machine,
      disk,
      savedAt: new Date(started).toISOString(),
      saveMs,
      ...(workload ? { workload } : {}),
    };
    await dir.writeJson(files.snapshotRecord, record);
    logger.progress(
      `saved the ready VM${workload ? ' with its workload' : ''} (${formatMiB(disk.vmStateBytes)} of VM state, in ${(saveMs / 1000).toFixed(1)} s); later starts restore it`,
    );
    return record;
  } catch (error) {
    return afterFailedSave(context, error);
  }
}

async function afterFailedSave(context: SnapshotContext & SaveTarget, error: unknown): Promise<undefined> {
  const { dir, logger } = context;
  const diskPath = dir.file(files.disk);
  const reason = (error as Error).message.split('\n').join('; ');
  const unrecorded = (deleteError: unknown) =>
    logger.warn(`could not delete the snapshot the failed save left in ${diskPath}: ${(deleteError as Error).message}`);
  if (await qemuEnded(context)) {
    // Its disk is closed now: qemu-img may change it.
    await removeSnapshot(context).catch(unrecorded);
    throw new K3sVmError(
      'QEMU_EXITED',
      `QEMU (pid ${context.pid}) exited while the ready VM was being saved into ${diskPath} (${reason})`,
      {
        cause: error,
        hint: `the VM is gone and nothing of the save was recorded: run again (the next start boots and saves anew); the end of ${dir.file(files.serialLog)} may say why QEMU ended`,
      },
    );
  }
  await deleteUnrecordedSnapshot(context).catch(unrecorded);
  await dir.remove(files.snapshotRecord).catch(unrecorded);
  const free = await freeBytes(diskPath);
  if (free !== undefined && free < runningRoomBytes) {
    throw new K3sVmError(
      'SNAPSHOT_FAILED',
      `the ready VM could not be saved: the file system that holds ${diskPath} is full (${formatMiB(free)} free) (${reason})`,
      {
        cause: error,
        hint:
          `free space on that file system (df -h ${dir.path}) and run again, or start without snapshots (${setting(context.config.names, 'snapshot', false)}); ` +
          `the save needs up to the VM's memory (${context.config.memoryMiB} MiB). What it wrote stays inside ${diskPath} until the next save writes over it; k3s-vm reset deletes the disk`,
      },
    );
  }
  logger.warn(`could not save a snapshot of the ready VM: ${reason}; the run goes on without one, and the next start boots again`);
  return undefined;
}

/**
 * Whether QEMU has ended (or is ending). A QEMU that is killed closes its control socket just
 * before the kernel marks it gone, so one that no longer answers there is waited for a moment.
 */
async function qemuEnded(target: SaveTarget): Promise<boolean> {
  if (!isRunning(target.pid)) return true;
  const answers = await QmpClient.connect(target.qmpSocket, 2000).then(
    (qmp) => {
      qmp.close();
      return true;
    },
    () => false,
  );
  return !answers && (await waitForExit(target.pid, 5000));
}

/** Deletes the ready-state snapshot from the disk of the running VM if the disk holds one (delvm: QEMU has the disk open). */
async function deleteUnrecordedSnapshot(context: SnapshotContext & SaveTarget): Promise<void> {
  if (await context.image.hasSnapshot(snapshotTag)) {
    context.image.changed();
    await deleteInternalSnapshotRunning(context.qmpSocket, snapshotTag);
  }
}

/**
 * Sets the guest's clock to the host's through QEMU's guest agent right after a load (a restore
 * at start, a rewind), with no SSH handshake. Until listenUntil (epoch ms) a socket QEMU has not
 * opened yet is connected to again; once connected, the agent has answerTimeoutMs. False, and
 * logged, when no agent answers: the caller sets the clock over SSH.
 */
export async function correctGuestClockByAgent(
  qmpSocket: string,
  options: {
    readonly listenUntil: number;
    readonly answerTimeoutMs: number;
    readonly signal: AbortSignal | undefined;
    readonly logger: Logger;
    readonly vmGone: () => string | undefined;
  },
): Promise<boolean> {
  const socket = guestAgentSocketOf(qmpSocket);
  for (;;) {
    throwIfAborted(options.signal);
    try {
      await setGuestClockByAgent(socket, { timeoutMs: options.answerTimeoutMs, signal: options.signal });
      return true;
    } catch (error) {
      if (options.signal?.aborted) throw error;
      if (error instanceof GuestAgentNotListening && Date.now() < options.listenUntil && !options.vmGone()) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        continue;
      }
      options.logger.debug(`setting the guest's clock through the guest agent failed (${(error as Error).message}); setting it over SSH`);
      return false;
    }
  }
}

/**
 * Sets the guest's clock to the host's right after a restore: the guest wakes at the time of
 * the save, and K3s's heartbeats, leases and certificate checks read the wall clock. Over SSH
 * with `date -s @SECONDS` (busybox and coreutils both take it); retried until the guest's SSH
 * server answers, which after a restore is at once.
 */
export async function correctGuestClock(
  target: SshTarget,
  deadline: number,
  options: { readonly signal: AbortSignal | undefined; readonly logger: Logger; readonly vmGone: () => string | undefined },
): Promise<void> {
  const { signal, logger } = options;
  let lastError: unknown;
  while (Date.now() < deadline) {
    throwIfAborted(signal);
    const gone = options.vmGone();
    if (gone) throw new Error(`${gone} before the guest's clock could be set`);
    let ssh: GuestSsh | undefined;
    try {
      ssh = await GuestSsh.connect(target, Math.max(1, Math.min(5000, deadline - Date.now())), signal);
      await setGuestClock(ssh, signal, logger);
      return;
    } catch (error) {
      if (signal?.aborted) throw error;
      lastError = error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    } finally {
      ssh?.close();
    }
  }
  throw new Error(`could not set the guest's clock after the restore: ${(lastError as Error | undefined)?.message ?? 'deadline passed'}`, {
    cause: lastError,
  });
}

/** Sets the guest's clock to the host's over an open connection (`date -u -s @SECONDS`). */
export async function setGuestClock(ssh: GuestShell, signal: AbortSignal | undefined, logger: Logger): Promise<void> {
  // The host's time is read as late as possible: the command runs right after.
  const seconds = (Date.now() / 1000).toFixed(3);
  const result = await ssh.exec(`date -u -s @${seconds.split('.')[0]} >/dev/null && date -u +%s`, { signal });
  if (result.exitCode !== 0) throw new Error(`date -s failed: ${result.stderr.trim() || result.stdout.trim()}`);
  const guestSeconds = Number(result.stdout.trim());
  logger.debug(`guest clock set to the host's (guest now ${guestSeconds}, host ${Math.floor(Date.now() / 1000)})`);
}

/** What `status` shows about the snapshot. */
export interface SnapshotStatus {
  readonly record: SnapshotRecord;
  /** The VM state's size inside the disk image. */
  readonly vmStateBytes: number;
  readonly diskPath: string;
}

/**
 * The recorded snapshot, if the disk still holds it: the record alone can outlive the snapshot
 * (the disk replaced, `qemu-img snapshot -d`). The disk's list is read with qemu-img
 * --force-share (tens of milliseconds, also while QEMU runs); without qemu-img nothing is shown.
 */
export async function snapshotStatus(dir: InstanceDir, pathVariable: string | undefined): Promise<SnapshotStatus | undefined> {
  const record = await readRecord(dir);
  if (!record || record === 'damaged' || !record.disk) return undefined;
  const exists = await stat(dir.file(files.disk)).then(
    () => true,
    () => false,
  );
  if (!exists) return undefined;
  const build = await currentBuild(dir).catch(() => undefined);
  const image = await DiskImage.of(dir.file(files.disk), build?.runScript ?? '', pathVariable, dir.dirName);
  const inDisk = await image.snapshots().catch(() => undefined);
  const found = inDisk?.find((entry) => entry.name === record.tag);
  if (!found || found.id !== record.disk.id || found.dateSec !== record.disk.dateSec || found.dateNsec !== record.disk.dateNsec)
    return undefined;
  return { record, vmStateBytes: found.vmStateBytes, diskPath: dir.file(files.disk) };
}

export function formatMiB(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(0)} MiB`;
}

/**
 * `k3s-vm snapshot rm` and reset: deletes the instance's snapshot. Refused while the VM runs
 * (QEMU holds the disk open; stop it first). Returns whether there was one.
 */
export async function deleteClusterSnapshot(options: ClusterOptions = {}): Promise<{ removed: boolean }> {
  const { dir, logger, config } = await prepare(options);
  return withLock(dir, { timeoutMs: stopLockTimeoutMs, signal: options.signal }, async () => {
    const status = await deriveStatus(dir);
    if (status.state === 'running') {
      throw new K3sVmError('STILL_RUNNING', `the VM is running (pid ${status.pid}) and holds its disk, where the snapshot is`, {
        hint: 'stop it first: k3s-vm stop',
      });
    }
    const build = await currentBuild(dir);
    const image = await DiskImage.of(dir.file(files.disk), build?.runScript ?? '', (options.env ?? process.env)['PATH'], dir.dirName);
    const removed = await removeSnapshot({ dir, image });
    logger.progress(removed ? `deleted the snapshot of ${config.name}; the next start boots` : 'there was no snapshot to delete');
    return { removed };
  });
}
