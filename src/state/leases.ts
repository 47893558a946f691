// Leases: each process using the VM holds one, so the VM stops only after the last user is done.
import { randomBytes } from 'node:crypto';
import { readdirSync, rmSync } from 'node:fs';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { files, runtimeFiles } from './files.js';
import type { InstanceDir } from './instance-dir.js';
import { isRunning } from './process.js';

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

/** Removes this process's lease synchronously, for exit work. Never throws. */
export function dropLeaseSync(dir: InstanceDir, leaseId: string): void {
  try {
    rmSync(dir.file(leaseFile(leaseId)), { force: true });
  } catch {
    // The next run removes a dead process's lease.
  }
}

/** How many processes other than this one hold a live lease (synchronous, for exit work). */
export function otherLiveLeaseCountSync(dir: InstanceDir): number {
  const names = (() => {
    try {
      return readdirSync(dir.file(files.leasesDir));
    } catch {
      return [];
    }
  })();
  return new Set(names.map((name) => Number.parseInt(name, 10)).filter((pid) => pid !== process.pid && isRunning(pid))).size;
}

/** Removes what a running VM leaves (pid, runtime, kubeconfig, QMP socket), for exit work. Never throws. */
export function removeRuntimeFilesSync(dir: InstanceDir, qmpSocket: string): void {
  for (const name of [...runtimeFiles.map((file) => dir.file(file)), qmpSocket]) {
    try {
      rmSync(name, { force: true });
    } catch {
      // The next start cleans up what is left.
    }
  }
}
