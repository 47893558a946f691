// Leases: each process using the VM holds one, so the VM stops only after the last user is done.
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { files, runtimeFiles } from './files.js';
import type { InstanceDir } from './instance-dir.js';
import { isInstanceQemu, isRunning, waitForExitSync } from './process.js';
import type { RuntimeRecord } from './status.js';

export interface LeaseRecord {
  readonly pid: number;
  readonly createdAt: string;
}

export interface Lease {
  readonly id: string;
  release(): Promise<void>;
}

const leaseFile = (id: string) => join(files.leasesDir, `${id}.json`);

/** Records that this process uses the VM. */
export async function takeLease(dir: InstanceDir): Promise<Lease> {
  const id = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const record: LeaseRecord = { pid: process.pid, createdAt: new Date().toISOString() };
  await dir.writeJson(leaseFile(id), record);
  return { id, release: () => rm(dir.file(leaseFile(id)), { force: true }) };
}

/** Leases whose owner still runs; leases of dead processes are removed on the way. */
export async function liveLeases(dir: InstanceDir): Promise<Array<LeaseRecord & { id: string }>> {
  const folder = dir.file(files.leasesDir);
  const names = await readdir(folder).catch(() => [] as string[]);
  const live: Array<LeaseRecord & { id: string }> = [];
  for (const name of names.filter((n) => n.endsWith('.json'))) {
    const path = join(folder, name);
    const record = await readFile(path, 'utf8')
      .then((text) => JSON.parse(text) as LeaseRecord)
      .catch(() => undefined);
    if (record && isRunning(record.pid)) live.push({ ...record, id: name.slice(0, -'.json'.length) });
    else await rm(path, { force: true });
  }
  return live;
}

/** Drops every lease (after the VM has stopped, none of them is meaningful). */
export async function clearLeases(dir: InstanceDir): Promise<void> {
  await rm(dir.file(files.leasesDir), { recursive: true, force: true });
}

/** Whether a process other than this one still holds a lease (synchronous, for exit hooks). */
function otherLiveLeasesSync(dir: InstanceDir): boolean {
  const names = (() => {
    try {
      return readdirSync(dir.file(files.leasesDir));
    } catch {
      return [];
    }
  })();
  return names.some((name) => {
    const pid = Number.parseInt(name, 10);
    return pid !== process.pid && isRunning(pid);
  });
}

/**
 * The synchronous last resort of an exiting process (a runner that calls process.exit on
 * Ctrl-C leaves no time for more): drop the lease, and SIGTERM the VM if it is not kept and
 * nobody else uses it. Never throws; the next run cleans whatever is left.
 */
export function releaseLeaseAtExit(dir: InstanceDir, leaseId: string): void {
  try {
    rmSync(dir.file(leaseFile(leaseId)), { force: true });
    const runtime = JSON.parse(readFileSync(dir.file(files.runtime), 'utf8')) as RuntimeRecord;
    if (runtime.keep || !isInstanceQemu(runtime.pid, runtime.qmpSocket) || otherLiveLeasesSync(dir)) return;
    process.kill(runtime.pid, 'SIGTERM');
    // Files of a QEMU that outlives the wait stay, so the next run still finds and stops it.
    if (waitForExitSync(runtime.pid, 2000)) removeRuntimeFilesSync(dir, runtime.qmpSocket);
  } catch {
    // Nothing more can be done while exiting.
  }
}

/** Removes what a running VM leaves (pid, runtime, kubeconfig, QMP socket), for exit hooks. Never throws. */
export function removeRuntimeFilesSync(dir: InstanceDir, qmpSocket: string): void {
  for (const name of [...runtimeFiles.map((file) => dir.file(file)), qmpSocket]) {
    try {
      rmSync(name, { force: true });
    } catch {
      // The next start cleans up what is left.
    }
  }
}
