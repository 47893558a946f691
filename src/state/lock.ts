// A cross-process lock on the instance: one start, stop or reset at a time.
import { open, readFile, rm } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { K3sVmError, throwIfAborted } from '../errors.js';
import { files } from './files.js';
import type { InstanceDir } from './instance-dir.js';
import { isRunning } from './process.js';

export interface LockOptions {
  readonly timeoutMs: number;
  readonly signal?: AbortSignal | undefined;
  /** Called once if the lock is busy, with the holder's pid. */
  readonly onWait?: (holderPid: number) => void;
}

export interface Lock {
  release(): Promise<void>;
}

/**
 * Takes the instance lock: a file created with O_EXCL that holds the owner's pid. A lock
 * whose owner is dead (killed with SIGKILL, say) is taken over.
 */
export async function acquireLock(dir: InstanceDir, options: LockOptions): Promise<Lock> {
  const path = dir.file(files.lock);
  const deadline = Date.now() + options.timeoutMs;
  let announced = false;
  for (;;) {
    throwIfAborted(options.signal);
    try {
      const handle = await open(path, 'wx', 0o600);
      await handle.writeFile(`${process.pid}\n`);
      await handle.close();
      let released = false;
      return {
        release: async () => {
          if (released) return;
          released = true;
          const owner = await readFile(path, 'utf8').catch(() => '');
          if (Number.parseInt(owner, 10) === process.pid) await rm(path, { force: true });
        },
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const holder = Number.parseInt(await readFile(path, 'utf8').catch(() => ''), 10);
    if (!Number.isSafeInteger(holder) || holder <= 0) {
      // Being written right now, or garbage left by a crash mid-write: give it a moment, then clear.
      await sleep(50);
      const again = await readFile(path, 'utf8').catch(() => undefined);
      if (again !== undefined && !Number.isSafeInteger(Number.parseInt(again, 10))) await rm(path, { force: true });
      continue;
    }
    if (holder !== process.pid && !isRunning(holder)) {
      await rm(path, { force: true });
      continue;
    }
    if (!announced) {
      options.onWait?.(holder);
      announced = true;
    }
    if (Date.now() >= deadline) {
      throw new K3sVmError('LOCK_TIMEOUT', `the instance in ${dir.path} is busy: process ${holder} holds ${path}`, {
        hint: `wait for process ${holder} to finish, or stop it; the lock is cleared automatically once it exits`,
      });
    }
    await sleep(100);
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
