// The instance lock names its holder by pid and start time, is never empty, and says who holds it.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { files } from '../../src/state/files.js';
import { InstanceDir } from '../../src/state/instance-dir.js';
import { acquireLock } from '../../src/state/lock.js';
import { freshStateDir } from '../support/test-guest.js';

const children: ChildProcess[] = [];
afterAll(() => children.forEach((child) => child.kill()));

/** A live process that has nothing to do with k3s-vm. */
async function unrelatedProcess(): Promise<number> {
  const child = spawn('sleep', ['300'], { stdio: 'ignore' });
  children.push(child);
  await new Promise((resolve) => child.once('spawn', resolve));
  return child.pid!;
}

/** A live Node process, as a k3s-vm run that holds the lock is. */
async function k3sVmLikeProcess(): Promise<number> {
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 300_000)'], { stdio: 'ignore' });
  children.push(child);
  await new Promise((resolve) => child.once('spawn', resolve));
  return child.pid!;
}

function startTimeOf(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]!;
}

async function newDir(): Promise<InstanceDir> {
  const dir = new InstanceDir(freshStateDir('faults-lock'));
  await dir.ensure();
  return dir;
}

describe('the instance lock', () => {
  it('a lock whose pid now belongs to an unrelated process (another start time, or not a Node process) is stale; a held one names its holder; it is never seen empty', async () => {
    const pid = await unrelatedProcess();
    // Written with the owner's start time, which the process with that pid now does not have.
    const mismatched = await newDir();
    writeFileSync(mismatched.file(files.lock), `${JSON.stringify({ pid, startTime: '1' })}\n`);
    await (await acquireLock(mismatched, { timeoutMs: 1000 })).release();

    // Pid and start time of a live process that is not a k3s-vm run (a shell's `echo $$ > lock`, a copied state directory): stale.
    const foreign = await newDir();
    writeFileSync(foreign.file(files.lock), `${JSON.stringify({ pid, startTime: startTimeOf(pid) })}\n`);
    await (await acquireLock(foreign, { timeoutMs: 1000 })).release();
    // Not a record k3s-vm writes (a bare pid, as a shell's `echo $$ > lock` leaves): cleared.
    const bare = await newDir();
    writeFileSync(bare.file(files.lock), `${pid}\n`);
    await (await acquireLock(bare, { timeoutMs: 1000 })).release();

    // Really held by a live k3s-vm run (a Node process): refused, naming the holder and its command.
    const run = await k3sVmLikeProcess();
    const held = await newDir();
    writeFileSync(held.file(files.lock), `${JSON.stringify({ pid: run, startTime: startTimeOf(run) })}\n`);
    const error = await acquireLock(held, { timeoutMs: 300 }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'LOCK_TIMEOUT' });
    expect((error as Error).message).toContain(`process ${run} (${process.execPath} -e setTimeout(() => {}, 300_000))`);
    expect(existsSync(held.file(files.lock))).toBe(true);
    // The same live run's pid without its start time is no record this version writes: cleared.
    const noStartTime = await newDir();
    writeFileSync(noStartTime.file(files.lock), `${JSON.stringify({ pid: run })}\n`);
    await (await acquireLock(noStartTime, { timeoutMs: 1000 })).release();

    // Whoever looks while the lock is taken sees the whole record or no file, never an empty one.
    const fresh = await newDir();
    const seen: string[] = [];
    let done = false;
    const watch = () => {
      try {
        seen.push(readFileSync(fresh.file(files.lock), 'utf8'));
      } catch {
        // Not there yet.
      }
      if (!done) setImmediate(watch);
    };
    watch();
    for (let i = 0; i < 50; i++) await (await acquireLock(fresh, { timeoutMs: 1000 })).release();
    done = true;
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.filter((text) => !new RegExp(`"pid":${process.pid}\\b`).test(text))).toEqual([]);
  });
});
