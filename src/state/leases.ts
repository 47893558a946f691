// Leases: each process using the VM holds one, so the VM stops only after the last user is done.
import { randomBytes } from 'node:crypto';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { files } from './files.js';
import type { InstanceDir } from './instance-dir.js';
import { isRunning } from './process.js';

export interface LeaseRecord {
  readonly pid: number;
  /** Whether this user started the VM (and so may stop it). */
  readonly startedVm: boolean;
  readonly createdAt: string;
}

export interface Lease {
  readonly id: string;
  release(): Promise<void>;
}

export async function takeLease(dir: InstanceDir, startedVm: boolean): Promise<Lease> {
  const id = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const record: LeaseRecord = { pid: process.pid, startedVm, createdAt: new Date().toISOString() };
  await dir.writeJson(join(files.leasesDir, `${id}.json`), record);
  return {
    id,
    release: () => rm(dir.file(join(files.leasesDir, `${id}.json`)), { force: true }),
  };
}

/** Leases whose owner still runs; leases of dead processes are removed on the way. */
export async function liveLeases(dir: InstanceDir): Promise<Array<LeaseRecord & { id: string }>> {
  const folder = dir.file(files.leasesDir);
  let names: string[];
  try {
    names = await readdir(folder);
  } catch {
    return [];
  }
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
