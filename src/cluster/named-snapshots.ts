// Named snapshots (`k3s-vm snapshot save|restore|ls|rm NAME`): saved from the running VM into its disk beside the ready-state one.
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { K3sVmError } from '../errors.js';
import { currentBuild, findRunScript } from '../nix/build-vm.js';
import { DiskImage } from '../qemu/disk.js';
import {
  deleteInternalSnapshotRunning,
  saveInternalSnapshot,
  snapshotTag,
  type SnapshotKey,
  type SnapshotRecord,
} from '../qemu/snapshot.js';
import { files } from '../state/files.js';
import type { InstanceDir } from '../state/instance-dir.js';
import { withLock } from '../state/lock.js';
import { deriveStatus, type RuntimeRecord } from '../state/status.js';
import { environment } from '../config/resolve-config.js';
import type { ClusterOptions } from './options.js';
import { prepare, stopLockTimeoutMs } from './prepare.js';
import { formatMiB } from './snapshot.js';

/** What a snapshot name may be: a file name and a QEMU snapshot tag at once (no spaces, no slash). */
const namePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
/** Names k3s-vm keeps for itself (the ready-state snapshot is `k3s-vm-ready`). */
const reservedPrefix = 'k3s-vm-';

/**
 * Refuses a name that cannot be a snapshot's before anything is touched. The ready-state
 * snapshot's own name is accepted where a snapshot is read (restore), never where one is made
 * or deleted by name.
 */
export function checkSnapshotName(name: string, use: 'save' | 'restore' | 'rm'): void {
  if (use === 'restore' && name === snapshotTag) return;
  const problem = !namePattern.test(name)
    ? 'a snapshot name is 1 to 63 letters, digits, dots, dashes and underscores, beginning with a letter or digit'
    : /^\d+$/.test(name)
      ? 'a snapshot name must not be all digits (QEMU would take it for a snapshot id)'
      : name.startsWith(reservedPrefix)
        ? `names beginning with ${reservedPrefix} are k3s-vm's own (the automatic snapshot is ${snapshotTag})`
        : undefined;
  if (problem) {
    throw new K3sVmError('CONFIG_INVALID', `invalid snapshot name ${JSON.stringify(name)}: ${problem}`, {
      hint: 'choose a name such as after-setup or with-operators',
    });
  }
}

/** The record file of a snapshot: snapshot.json for the ready-state one, snapshots/NAME.json for a named one. */
export function snapshotRecordFile(name: string): string {
  return name === snapshotTag ? files.snapshotRecord : join(files.snapshotsDir, `${name}.json`);
}

/** A snapshot's record; undefined when there is none, 'damaged' when it does not parse. */
export async function readSnapshotRecord(dir: InstanceDir, name: string): Promise<SnapshotRecord | undefined | 'damaged'> {
  try {
    return await dir.readJson<SnapshotRecord>(snapshotRecordFile(name));
  } catch {
    return 'damaged';
  }
}

/** The running VM's disk image, with the QEMU tools of the run script of the build it was started from. */
export async function runningVmImage(dir: InstanceDir, runtime: RuntimeRecord, pathVariable: string | undefined): Promise<DiskImage> {
  const runScript = await findRunScript(runtime.storePath);
  if (!runScript) {
    throw new K3sVmError('RUN_SCRIPT_MISSING', `the running VM's build ${runtime.storePath} has no bin/run-*-vm any more`, {
      hint: 'stop the VM and start it again (k3s-vm stop; k3s-vm start)',
    });
  }
  return DiskImage.of(dir.file(files.disk), runScript, pathVariable, dir.dirName);
}

/** The key a snapshot of the running VM has: what it was started from, read from its runtime record. */
export async function runningVmKey(dir: InstanceDir, runtime: RuntimeRecord, image: DiskImage): Promise<SnapshotKey> {
  const field = (name: string) => runtime.fingerprint[name] ?? '';
  const kernelParams = field('kernelParams');
  return {
    storePath: runtime.storePath,
    qemuVersion: await image.tools.version(),
    memoryMiB: Number(field('memoryMiB')),
    cpus: Number(field('cpus')),
    accel: runtime.accel,
    kernelParams: kernelParams === '(none)' ? '' : kernelParams,
    // The key it booted with (given at boot, and so part of what a snapshot holds).
    sshPublicKey: (await dir.readText(files.sshPublicKey))?.trim() ?? '',
  };
}

/** The running VM (under the lock), or NOT_RUNNING naming what the operation needed it for. */
async function runningRuntime(dir: InstanceDir, purpose: string): Promise<RuntimeRecord> {
  const status = await deriveStatus(dir);
  if (status.state !== 'running' || !status.runtime) {
    throw new K3sVmError('NOT_RUNNING', `${purpose} needs the running VM, and it is ${status.state}`, {
      hint: 'start it first: npx k3s-vm start',
    });
  }
  return status.runtime;
}

/**
 * `k3s-vm snapshot save NAME`: saves the running VM (paused for the save) as NAME in its disk
 * and records what it was saved from. Saving a name again replaces that snapshot.
 */
export async function saveNamedSnapshot(name: string, options: ClusterOptions = {}): Promise<SnapshotRecord> {
  checkSnapshotName(name, 'save');
  const { dir, logger } = await prepare(options);
  const env = environment(options.env);
  return withLock(dir, { timeoutMs: stopLockTimeoutMs, signal: options.signal }, async () => {
    const runtime = await runningRuntime(dir, `saving snapshot ${name}`);
    const image = await runningVmImage(dir, runtime, env['PATH']);
    const key = await runningVmKey(dir, runtime, image);
    const started = Date.now();
    await dir.remove(snapshotRecordFile(name));
    const { machine } = await saveInternalSnapshot(runtime.qmpSocket, name).catch((error: unknown) => {
      throw new K3sVmError('QMP_FAILED', `QEMU did not save snapshot ${name}: ${(error as Error).message}`, { cause: error });
    });
    const saveMs = Date.now() - started;
    const disk = (await image.snapshots()).find((entry) => entry.name === name);
    if (!disk) throw new K3sVmError('QMP_FAILED', `QEMU reported no error, but the disk holds no snapshot ${name}`);
    const record: SnapshotRecord = { tag: name, key, machine, disk, savedAt: new Date(started).toISOString(), saveMs };
    await dir.writeJson(snapshotRecordFile(name), record);
    logger.progress(
      `saved snapshot ${name} (${formatMiB(disk.vmStateBytes)} of VM state, the VM paused ${(saveMs / 1000).toFixed(1)} s); k3s-vm snapshot restore ${name} returns to it`,
    );
    return record;
  });
}

/** One line of `k3s-vm snapshot ls`. */
export interface SnapshotEntry {
  readonly name: string;
  /** The ready-state snapshot that starts restore (K3S_VM_SNAPSHOT), rather than one saved by name. */
  readonly automatic: boolean;
  readonly savedAt: string;
  readonly vmStateBytes: number;
  readonly storePath: string;
}

/** The snapshots with a record: the automatic one first, then the named ones by name. Read without QEMU. */
export async function listSnapshots(options: ClusterOptions = {}): Promise<SnapshotEntry[]> {
  const { dir } = await prepare(options);
  if (!dir.exists(files.disk)) return [];
  const names = (await readdir(dir.file(files.snapshotsDir)).catch(() => [] as string[]))
    .filter((file) => file.endsWith('.json'))
    .map((file) => file.slice(0, -'.json'.length))
    .sort();
  // A record can outlive its snapshot (the disk replaced, qemu-img snapshot -d): only what the
  // disk still holds, the same save (id and date), is listed.
  const build = await currentBuild(dir).catch(() => undefined);
  const env = environment(options.env);
  const image = await DiskImage.of(dir.file(files.disk), build?.runScript ?? '', env['PATH'], dir.dirName);
  const inDisk = await image.snapshots().catch(() => []);
  const entries: SnapshotEntry[] = [];
  for (const name of [snapshotTag, ...names]) {
    const record = await readSnapshotRecord(dir, name);
    if (!record || record === 'damaged' || !record.disk || !record.key) continue;
    const saved = record.disk;
    const found = inDisk.find((entry) => entry.name === name);
    if (!found || found.id !== saved.id || found.dateSec !== saved.dateSec || found.dateNsec !== saved.dateNsec) continue;
    entries.push({
      name,
      automatic: name === snapshotTag,
      savedAt: record.savedAt,
      vmStateBytes: found.vmStateBytes,
      storePath: record.key.storePath,
    });
  }
  return entries;
}

/**
 * `k3s-vm snapshot rm NAME`: deletes a named snapshot, from the running VM's disk through
 * QEMU or from the stopped VM's disk with qemu-img. Returns whether there was one.
 */
export async function deleteNamedSnapshot(name: string, options: ClusterOptions = {}): Promise<{ removed: boolean }> {
  checkSnapshotName(name, 'rm');
  const { dir, logger } = await prepare(options);
  const env = environment(options.env);
  return withLock(dir, { timeoutMs: stopLockTimeoutMs, signal: options.signal }, async () => {
    const status = await deriveStatus(dir);
    const hadRecord = dir.exists(snapshotRecordFile(name));
    let removed = hadRecord;
    if (dir.exists(files.disk)) {
      const image = status.runtime
        ? await runningVmImage(dir, status.runtime, env['PATH'])
        : await DiskImage.of(dir.file(files.disk), (await currentBuild(dir))?.runScript ?? '', env['PATH'], dir.dirName);
      if (await image.hasSnapshot(name)) {
        if (status.state === 'running' && status.runtime) await deleteInternalSnapshotRunning(status.runtime.qmpSocket, name);
        else await image.deleteSnapshot(name);
        removed = true;
      }
    }
    await dir.remove(snapshotRecordFile(name));
    logger.progress(removed ? `deleted snapshot ${name}` : `there is no snapshot ${name}`);
    return { removed };
  });
}
