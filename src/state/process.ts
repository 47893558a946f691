// Process liveness and identity: is a pid alive, and is it really this instance's QEMU?
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { isQemuCommandLine } from './qemu-identity.js';

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The process's command line (argv), or undefined if it is gone or unreadable. */
export function commandLineOf(pid: number): string[] | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    const argv = raw.split('\0');
    if (argv.at(-1) === '') argv.pop();
    return argv;
  } catch {
    return undefined;
  }
}

/**
 * True only when pid is alive AND its command line names this instance's QMP socket:
 * a pid file left behind can point at an unrelated process that reused the number.
 */
export function isInstanceQemu(pid: number, qmpSocketPath: string): boolean {
  const argv = commandLineOf(pid);
  return argv !== undefined && isQemuCommandLine(argv, qmpSocketPath);
}

/**
 * When the process started, in clock ticks since the host booted (field 22 of /proc/PID/stat),
 * or undefined if it is gone. With the pid it names one process: a reused number has another.
 */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command (which may hold spaces and parentheses) start at the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19];
  } catch {
    return undefined;
  }
}

/** Zombie processes count as alive for kill(0) but have exited; /proc tells. */
export function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state === 'Z' || state === 'X';
  } catch {
    return false;
  }
}

export function isRunning(pid: number): boolean {
  return isAlive(pid) && !isZombie(pid);
}

/** Polls until the process is gone; resolves false if it is still there at the deadline. */
export async function waitForExit(pid: number, timeoutMs: number, intervalMs = 50): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isRunning(pid)) {
    if (Date.now() >= deadline) return false;
    await sleep(intervalMs);
  }
  return true;
}

/** waitForExit for exit work (src/at-exit.ts), where nothing asynchronous runs any more. */
export function waitForExitSync(pid: number, timeoutMs: number, intervalMs = 20): boolean {
  const deadline = Date.now() + timeoutMs;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  while (isRunning(pid)) {
    if (Date.now() >= deadline) return false;
    Atomics.wait(pause, 0, 0, intervalMs);
  }
  return true;
}
