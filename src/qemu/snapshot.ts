// The ready-state snapshot: a QEMU internal snapshot (savevm / -loadvm) in the qcow2 disk, and what it must match to be restored.
import { QmpClient } from './qmp.js';

/**
 * The one snapshot's name inside the disk image. One name, so a state directory never holds
 * more than one: savevm replaces a snapshot of the same name.
 *
 * Internal rather than a migration stream in a file, by measurement (test guest, QEMU 7.2,
 * TCG, 1 GiB, docs/snapshots.md): savevm took 0.36 s against 1.04 s for `migrate` to a file,
 * restore-to-ready 0.67–0.79 s with -loadvm against 0.91–2.8 s with `-incoming "exec:cat …"`,
 * and the size was the same (148 MiB of VM state). What decides it is the disk: a stream in a
 * file holds RAM only and is valid only while the disk is byte for byte what it was at the
 * save, which the first write after a restore ends. An internal snapshot holds the disk's
 * state too (qcow2 keeps the snapshot's clusters copy-on-write), and -loadvm reverts the disk
 * to it, so the snapshot survives every run that restores it and writes.
 */
export const snapshotTag = 'k3s-vm-ready';

/** Everything a snapshot was saved from that must be the same for it to be restored. */
export interface SnapshotKey {
  /** The VM build: kernel, initrd, run script (and through it the machine type and devices). */
  readonly storePath: string;
  /** `qemu-system-x86_64 --version`, first line: the state format and the `pc` and `q35` machine aliases follow it. */
  readonly qemuVersion: string;
  readonly memoryMiB: number;
  readonly cpus: number;
  /** `-cpu max` is a different CPU under KVM than under TCG. */
  readonly accel: 'kvm' | 'tcg';
  /** The kernel command line is the saved boot's: a restore does not boot. */
  readonly kernelParams: string;
  /**
   * The instance's public key, which the saved boot's guest was given on its command line: a
   * new key pair (the old one was damaged) would not be let in by the restored guest.
   */
  readonly sshPublicKey: string;
}

/** snapshot.json: the key, and which snapshot in the disk it describes. */
export interface SnapshotRecord {
  readonly tag: string;
  readonly key: SnapshotKey;
  /** The machine QEMU ran (e.g. pc-i440fx-7.2-machine), for the record: storePath and qemuVersion determine it. */
  readonly machine: string;
  /** The disk's own entry for the snapshot: a disk replaced or a snapshot made again does not match it. */
  readonly disk: InternalSnapshot;
  readonly savedAt: string;
  /** How long the save paused the VM. */
  readonly saveMs: number;
  /** The workload loaded when it was saved (absent: none, the empty ready cluster). */
  readonly workload?: SnapshotWorkload;
}

/** The workload a snapshot holds, by content: a start with other digests loads what changed and saves again. */
export interface SnapshotWorkload {
  /** sha256 of each image archive imported, in order. */
  readonly images: readonly string[];
  /** sha256 of each manifest file applied, in order. */
  readonly manifests: readonly string[];
  /** Whether the save waited for the manifests' Deployments to roll out. */
  readonly waitForRollout: boolean;
}

/** Whether a snapshot's workload is the one wanted now. */
export function sameWorkload(saved: SnapshotWorkload | undefined, wanted: SnapshotWorkload): boolean {
  if (!saved) return false;
  const same = (a: readonly string[] | undefined, b: readonly string[]) => a?.length === b.length && a.every((value, i) => value === b[i]);
  return same(saved.images, wanted.images) && same(saved.manifests, wanted.manifests) && saved.waitForRollout === wanted.waitForRollout;
}

/** One internal snapshot as `qemu-img info --output=json` lists it. */
export interface InternalSnapshot {
  readonly id: string;
  readonly name: string;
  readonly vmStateBytes: number;
  readonly dateSec: number;
  readonly dateNsec: number;
}

/** The key's fields that differ, as "field: saved → now" lines (empty when it matches). */
export function snapshotKeyDifferences(saved: Partial<SnapshotKey>, wanted: SnapshotKey): string[] {
  const lines: string[] = [];
  for (const field of Object.keys(wanted) as (keyof SnapshotKey)[]) {
    if (saved[field] !== wanted[field]) lines.push(`${field}: ${String(saved[field] ?? '(unset)')} → ${String(wanted[field])}`);
  }
  return lines;
}

/** The internal snapshots in `qemu-img info --output=json` text. */
export function parseInternalSnapshots(infoJson: string): InternalSnapshot[] {
  const info = JSON.parse(infoJson) as { snapshots?: Array<Record<string, unknown>> };
  return (info.snapshots ?? []).map((entry) => ({
    id: String(entry['id']),
    name: String(entry['name']),
    vmStateBytes: Number(entry['vm-state-size'] ?? 0),
    dateSec: Number(entry['date-sec'] ?? 0),
    dateNsec: Number(entry['date-nsec'] ?? 0),
  }));
}

/**
 * Why the record cannot be restored with this key and this disk's snapshots; undefined when
 * it can. Every reason is a sentence for the "cold boot because …" message.
 */
export function whyNotRestorable(
  record: SnapshotRecord | undefined,
  wanted: SnapshotKey,
  inDisk: readonly InternalSnapshot[],
  tag: string = snapshotTag,
): string | undefined {
  const found = inDisk.find((entry) => entry.name === tag);
  if (!record)
    return found
      ? 'the disk holds a snapshot without a record of what it was saved from (a save that did not finish)'
      : 'there is no snapshot yet';
  if (
    record.tag !== tag ||
    typeof record.key !== 'object' ||
    record.key === null ||
    typeof record.disk !== 'object' ||
    record.disk === null
  ) {
    return 'the snapshot record is damaged';
  }
  const differences = snapshotKeyDifferences(record.key, wanted);
  if (differences.length) return `the VM changed since the snapshot was saved (${differences.join('; ')})`;
  if (!found) return 'the snapshot is missing from the disk image (the disk was replaced or the snapshot deleted)';
  const same =
    found.id === record.disk.id &&
    found.vmStateBytes === record.disk.vmStateBytes &&
    found.dateSec === record.disk.dateSec &&
    found.dateNsec === record.disk.dateNsec;
  if (!same) return 'the disk image holds another snapshot than the one recorded (the disk was replaced or the snapshot made again)';
  // Whether the VM state itself loads only QEMU can tell: a state it refuses ends the restore,
  // and the boot falls back to a cold one (src/cluster/boot.ts).
  return undefined;
}

/** QEMU options that restore the snapshot instead of booting (QEMU_OPTS is word-split: the tag has no spaces). */
export function restoreOptions(): readonly string[] {
  return ['-loadvm', snapshotTag];
}

/**
 * Saves the running VM into its disk (HMP savevm through QMP: the VM pauses for the save and
 * runs on after it). QEMU answers a failed savevm with text, not a QMP error: any text is one.
 * Returns the machine type QEMU runs.
 */
export async function saveInternalSnapshot(qmpSocket: string, tag: string = snapshotTag): Promise<{ machine: string }> {
  const qmp = await QmpClient.connect(qmpSocket);
  try {
    const output = await qmp.execute<string>('human-monitor-command', { 'command-line': `savevm ${tag}` });
    if (typeof output === 'string' && output.trim()) throw new Error(output.trim());
    const machine = await qmp.execute<string>('qom-get', { path: '/machine', property: 'type' }).catch(() => 'unknown');
    return { machine: String(machine) };
  } finally {
    qmp.close();
  }
}

/** Why QEMU would not load a snapshot into the running VM, and whether the VM was touched by then. */
export class LoadSnapshotError extends Error {
  constructor(
    message: string,
    /** QEMU's run state after the refusal (`paused`, `restore-vm`, …), or undefined when it could not be read. */
    readonly runState: string | undefined,
  ) {
    super(message);
  }
}

/**
 * Returns the running VM to an internal snapshot of its disk (HMP loadvm through QMP): QEMU
 * stops the VM, reverts the disk and loads memory and device state, then lets it run. HMP
 * rather than QMP's snapshot-load job: measured alike (bench/rewind.ts, test guest, TCG, eight
 * alternating pairs on one VM over two runs: medians 0.32 s and 0.33 s, both 0.2–1.1 s on a
 * loaded host), as both run QEMU's load_snapshot; the job needs a node-name lookup and a job
 * to poll and dismiss, the HMP command is one request.
 * A refused loadvm leaves the VM stopped (QEMU restarts it only after a load that
 * succeeded), possibly with its disk already reverted: the caller must not let it run on.
 */
export async function loadInternalSnapshot(qmpSocket: string, tag: string): Promise<void> {
  const qmp = await QmpClient.connect(qmpSocket);
  try {
    const output = await qmp.execute<string>('human-monitor-command', { 'command-line': `loadvm ${tag}` });
    if (typeof output === 'string' && output.trim()) {
      const status = await qmp.execute<{ status?: string }>('query-status').catch(() => undefined);
      throw new LoadSnapshotError(output.trim(), status?.status);
    }
    const status = await qmp.execute<{ status?: string; running?: boolean }>('query-status');
    if (!status.running)
      throw new LoadSnapshotError(`QEMU loaded the snapshot but the VM is ${status.status ?? 'not running'}`, status.status);
  } finally {
    qmp.close();
  }
}

/** Deletes a snapshot from the disk of a running VM (HMP delvm: QEMU holds the disk open). */
export async function deleteInternalSnapshotRunning(qmpSocket: string, tag: string): Promise<void> {
  const qmp = await QmpClient.connect(qmpSocket);
  try {
    const output = await qmp.execute<string>('human-monitor-command', { 'command-line': `delvm ${tag}` });
    if (typeof output === 'string' && output.trim()) throw new Error(output.trim());
  } finally {
    qmp.close();
  }
}
