// A cross-process lock on the instance: one start, stop or reset at a time.
import { randomBytes } from 'node:crypto';
import { readFileSync, realpathSync, rmSync } from 'node:fs';
import { link, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { atExit } from '../at-exit.js';
import { K3sVmError, throwIfAborted } from '../errors.js';
import { files } from './files.js';
import type { InstanceDir } from './instance-dir.js';
import { commandLineOf, isRunning, processStartTime } from './process.js';

export interface LockOptions {
  readonly timeoutMs: number;
  readonly signal?: AbortSignal | undefined;
  /** Called once if the lock is busy, with the holder's pid. */
  readonly onWait?: (holderPid: number) => void;
}

export interface Lock {
  release(): Promise<void>;
}

/** What the lock file holds: the owner, identified as strictly as the QEMU pid file is. */
export interface LockRecord {
  readonly pid: number;
  /** The owner's start time (see processStartTime): a pid reused by another process does not match. */
  readonly startTime: string;
  /** The owner's command line, for messages. */
  readonly command?: string | undefined;
  readonly since?: string | undefined;
}

/** Exit work for a lock this process holds (or is about to): removes the file if it still holds this content. */
function removeAtExit(path: string, content: string): () => void {
  return atExit(() => {
    try {
      if (readFileSync(path, 'utf8') === content) rmSync(path, { force: true });
    } catch {
      // Already gone.
    }
  });
}

/** Parses a lock file: the JSON record acquireLock writes; undefined for anything else. */
export function parseLockRecord(text: string): LockRecord | undefined {
  try {
    const record = JSON.parse(text) as LockRecord;
    return Number.isSafeInteger(record.pid) && record.pid > 0 && typeof record.startTime === 'string' ? record : undefined;
  } catch {
    return undefined;
  }
}

/** Whether the lock's owner is still the process that wrote it: same pid and same start time. */
export function lockHolderAlive(record: LockRecord): boolean {
  if (!isRunning(record.pid)) return false;
  // Only a k3s-vm run holds the lock: a Node process, as the pid file's holder must be this instance's QEMU.
  if (!isNodeProcess(record.pid)) return false;
  return processStartTime(record.pid) === record.startTime;
}

/**
 * Whether the process runs the same program as this one (Node): a lock file whose pid now
 * belongs to an unrelated process (a shell, an editor) is stale however long that one lives.
 * When the program cannot be read (another user's process), it counts as ours: no lock is
 * taken over on a guess.
 */
function isNodeProcess(pid: number): boolean {
  const program = (p: number) => {
    try {
      return realpathSync(`/proc/${p}/exe`);
    } catch {
      return undefined;
    }
  };
  const theirs = program(pid);
  if (theirs === undefined) return true;
  return theirs === program(process.pid) || /(^|\/)node[^/]*$/.test(theirs);
}

function describeHolder(record: LockRecord): string {
  const argv = commandLineOf(record.pid);
  const command = argv ? argv.join(' ') : record.command;
  const shown = command && command.length > 120 ? `${command.slice(0, 117)}...` : command;
  return `process ${record.pid}${shown ? ` (${shown})` : ''}${record.since ? `, holding it since ${record.since}` : ''}`;
}

/**
 * Takes the instance lock. The lock file is written whole to a temporary file and linked into
 * place, so it exists only with its content: the owner's pid and start time. A lock whose owner
 * is dead, or whose pid now belongs to another process, is stale and taken over.
 */
export async function acquireLock(dir: InstanceDir, options: LockOptions): Promise<Lock> {
  const path = dir.file(files.lock);
  const own: LockRecord = {
    pid: process.pid,
    // /proc/self/stat is always readable; a record without it would be taken for garbage.
    startTime: processStartTime(process.pid) ?? 'unknown',
    command: process.argv.join(' '),
    since: new Date().toISOString(),
  };
  const content = `${JSON.stringify(own)}\n`;
  const deadline = Date.now() + options.timeoutMs;
  let announced = false;
  for (;;) {
    throwIfAborted(options.signal);
    // Counted as held from before the file appears until after it is gone: a process that
    // exits in between (a runner's process.exit on SIGTERM) must still take it along. The exit
    // work removes only a file with this content, so claiming one not won is harmless.
    const cancelExitWork = removeAtExit(path, content);
    const created = await tryCreate(dir, path, content);
    if (!created) cancelExitWork();
    if (created) {
      let released = false;
      return {
        release: async () => {
          if (released) return;
          released = true;
          const current = await readFile(path, 'utf8').catch(() => '');
          if (current === content) await rm(path, { force: true });
          cancelExitWork();
        },
      };
    }
    const text = await readFile(path, 'utf8').catch(() => undefined);
    if (text === undefined) continue; // released in between
    const holder = parseLockRecord(text);
    if (!holder) {
      // Not a record acquireLock writes (it links a complete file, so never a half-written
      // one): written by hand or damaged. Cleared, unless it changes in the meantime.
      await sleep(50);
      if ((await readFile(path, 'utf8').catch(() => undefined)) === text) await takeOverStale(path, text);
      continue;
    }
    const mine = holder.pid === process.pid && holder.startTime === own.startTime;
    if (!mine && !lockHolderAlive(holder)) {
      await takeOverStale(path, text);
      continue;
    }
    if (!announced) {
      options.onWait?.(holder.pid);
      announced = true;
    }
    if (Date.now() >= deadline) {
      throw new K3sVmError('LOCK_TIMEOUT', `the instance in ${dir.path} is busy: ${describeHolder(holder)} holds ${path}`, {
        hint: `wait for process ${holder.pid} to finish, or stop it; the lock is cleared automatically once it exits`,
      });
    }
    await sleep(100);
  }
}

/** Creates the lock file with its content in one step; false if it exists. */
async function tryCreate(dir: InstanceDir, path: string, content: string): Promise<boolean> {
  const temp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(temp, content, { mode: 0o600 });
    await link(temp, path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw dir.ioError(error, path);
  } finally {
    await rm(temp, { force: true }).catch(() => undefined);
  }
}

/**
 * Removes a stale lock, but only the one judged stale: it is moved aside first, and put back
 * if another process replaced it with a fresh one in the meantime.
 */
async function takeOverStale(path: string, staleContent: string): Promise<void> {
  const aside = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.stale`;
  try {
    await rename(path, aside);
  } catch {
    return; // gone already
  }
  try {
    const moved = await readFile(aside, 'utf8').catch(() => staleContent);
    if (moved !== staleContent) await link(aside, path).catch(() => undefined);
  } finally {
    await rm(aside, { force: true }).catch(() => undefined);
  }
}

/** Runs fn while holding the lock. */
export async function withLock<T>(dir: InstanceDir, options: LockOptions, fn: () => Promise<T>): Promise<T> {
  const lock = await acquireLock(dir, options);
  try {
    return await fn();
  } finally {
    await lock.release();
  }
}
