// Runs a consumer project in fixtures/ with its test runner, the way its users would.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, symlinkSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { expect } from 'vitest';
import { repoRoot, testGuestNix } from './test-guest.js';

/** Makes `k3s-vm` resolve to this repository from a consumer project, as an install would. */
export function linkPackage(project: string): void {
  const link = join(project, 'node_modules', 'k3s-vm');
  mkdirSync(join(project, 'node_modules'), { recursive: true });
  if (!existsSync(link)) {
    rmSync(link, { force: true });
    symlinkSync(repoRoot, link, 'dir');
  }
}

/** The environment a consumer run gets: the test guest as the VM, a given state directory. */
export function consumerEnv(stateDir: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    K3S_VM_DIR: stateDir,
    K3S_VM_NIX: testGuestNix,
    K3S_VM_NAME: 'consumer',
    K3S_VM_ACCEL: 'tcg',
    K3S_VM_MEMORY: '1024',
    K3S_VM_DISK_SIZE: '2048',
    K3S_VM_TIMEOUT: '240',
    K3S_VM_KEEP: '',
    NO_COLOR: '1',
    ...extra,
  };
}

/** Starts `vitest run` (or another command) in a consumer project with the given environment. */
export function runIn(project: string, command: string, args: string[], env: Record<string, string>) {
  return execa(command, args, { cwd: project, env, reject: false, all: true, preferLocal: true, localDir: repoRoot, stdin: 'ignore' });
}

/** Command lines of the QEMU processes whose arguments mention a state directory. */
export function qemuProcessesUsing(dir: string): string[] {
  return execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' })
    .split('\n')
    .filter((line) => line.includes('qemu-system') && line.includes(dir));
}

/**
 * Runs a consumer project until its long test has started, interrupts it with `signal`, and
 * waits until no QEMU of that state directory is left.
 */
export async function interruptDuringTests(project: string, command: string, args: string[], env: Record<string, string>, dir: string, signal: NodeJS.Signals): Promise<void> {
  const run = runIn(project, command, args, env);
  let output = '';
  run.all?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  await expect.poll(() => output, { timeout: 200_000, interval: 200 }).toMatch(/slow test started/);
  run.kill(signal);
  await run;
  await expect.poll(() => qemuProcessesUsing(dir).length, { timeout: 30_000, interval: 200 }).toBe(0);
}
