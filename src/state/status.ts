// Instance status, derived every time from the state files plus process liveness; never stored.
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Accel } from '../config/options.js';
import { files, maxSocketPathBytes } from './files.js';
import type { InstanceDir } from './instance-dir.js';
import { isInstanceQemu, isRunning } from './process.js';

/** What the VM was started with; written once QEMU runs, removed when it stops. */
export interface RuntimeRecord {
  readonly pid: number;
  readonly apiPort: number;
  readonly sshPort: number;
  /** The accelerator actually used. */
  readonly accel: Exclude<Accel, 'auto'>;
  readonly qmpSocket: string;
  readonly startedAt: string;
  /** Runtime fingerprint (config fields with the actual ports) for the reuse decision. */
  readonly fingerprint: Readonly<Record<string, string>>;
  /** Whether the process that started it asked to keep it (CLI or K3S_VM_KEEP). */
  readonly keep: boolean;
  readonly storePath: string;
}

export type VmState = 'running' | 'stopped' | 'broken';

export interface InstanceStatus {
  readonly state: VmState;
  /** Why the state is what it is, one sentence each (empty when plainly running or stopped). */
  readonly reasons: readonly string[];
  /** The QEMU pid, only when it is verified to be this instance's QEMU. */
  readonly pid: number | undefined;
  /** The pid the pid file names, verified or not. */
  readonly recordedPid: number | undefined;
  readonly runtime: RuntimeRecord | undefined;
}

/**
 * The QMP socket path for an instance: inside the directory when that fits the Unix socket
 * limit, else a per-directory name under the temporary directory.
 */
export function qmpSocketPath(dir: InstanceDir): string {
  const inside = dir.file(files.qmp);
  if (Buffer.byteLength(inside) <= maxSocketPathBytes) return inside;
  const digest = createHash('sha256').update(dir.path).digest('hex').slice(0, 16);
  return join(tmpdir(), `k3s-vm-${digest}.qmp`);
}

export async function readPid(dir: InstanceDir): Promise<number | undefined> {
  const text = await dir.readText(files.pid);
  if (text === undefined) return undefined;
  const pid = Number.parseInt(text.trim(), 10);
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

export async function deriveStatus(dir: InstanceDir): Promise<InstanceStatus> {
  const recordedPid = await readPid(dir);
  const runtime = await dir.readJson<RuntimeRecord>(files.runtime).catch(() => undefined);
  if (recordedPid === undefined) {
    if (dir.exists(files.pid)) {
      return { state: 'broken', reasons: [`${dir.file(files.pid)} does not hold a process id`], pid: undefined, recordedPid, runtime };
    }
    return { state: 'stopped', reasons: [], pid: undefined, recordedPid, runtime: undefined };
  }
  const socket = runtime?.qmpSocket ?? qmpSocketPath(dir);
  if (!isRunning(recordedPid)) {
    return {
      state: 'broken',
      reasons: [`QEMU (pid ${recordedPid}) is gone but was not stopped cleanly (killed, crashed or the host restarted)`],
      pid: undefined,
      recordedPid,
      runtime,
    };
  }
  if (!isInstanceQemu(recordedPid, socket)) {
    return {
      state: 'broken',
      reasons: [`the pid file names process ${recordedPid}, which is not this VM's QEMU (a stale pid file); that process is left alone`],
      pid: undefined,
      recordedPid,
      runtime,
    };
  }
  const reasons: string[] = [];
  if (!runtime) reasons.push(`${dir.file(files.runtime)} is missing, so the forwarded ports are unknown`);
  try {
    if (!statSync(socket).isSocket()) reasons.push(`${socket} is not a socket`);
  } catch {
    reasons.push(`the QMP socket ${socket} is missing`);
  }
  return { state: reasons.length ? 'broken' : 'running', reasons, pid: recordedPid, recordedPid, runtime };
}
