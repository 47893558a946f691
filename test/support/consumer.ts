// Runs a consumer project in fixtures/ with its test runner, the way its users would.
// Also imported by bench/run.ts under Node's type stripping: runtime imports from src/ are not allowed here.
import { execFileSync } from 'node:child_process';
import { mkdirSync, realpathSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { repoRoot, testGuestNix } from './test-guest.js';

export const consumerVitestProject = join(repoRoot, 'fixtures', 'consumer-vitest');
export const consumerJestProject = join(repoRoot, 'fixtures', 'consumer-jest');

/** Makes `k3s-vm` resolve to this repository from a consumer project, as an install would. */
export function linkPackage(project: string): void {
  const modules = join(project, 'node_modules');
  const link = join(modules, 'k3s-vm');
  mkdirSync(modules, { recursive: true });
  let target: string | undefined;
  try {
    target = realpathSync(link);
  } catch {
    target = undefined;
  }
  if (target !== realpathSync(repoRoot)) {
    rmSync(link, { force: true, recursive: false });
    symlinkSync(repoRoot, link, 'dir');
  }
}

/** This process's environment without the K3S_VM_* variables a developer's shell may hold. */
export function envWithoutK3sVm(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) if (value !== undefined && !key.startsWith('K3S_VM_')) env[key] = value;
  return env;
}

/**
 * The whole environment of a consumer run: this process's, without the developer's K3S_VM_*
 * variables, with this repository's tools first on PATH, the test guest as the VM and `stateDir`
 * as the state directory; `extra` last.
 */
export function consumerEnv(stateDir: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    ...envWithoutK3sVm(),
    PATH: `${join(repoRoot, 'node_modules', '.bin')}:${process.env['PATH'] ?? ''}`,
    K3S_VM_DIR: stateDir,
    K3S_VM_NIX: testGuestNix,
    K3S_VM_NAME: 'consumer',
    K3S_VM_ACCEL: 'tcg',
    K3S_VM_MEMORY: '1024',
    K3S_VM_DISK_SIZE: '2048',
    // Well inside a test's timeout (180 s), so a consumer run that never gets ready ends
    // with the readiness error and the serial log rather than a bare test timeout.
    K3S_VM_TIMEOUT: '120',
    NO_COLOR: '1',
    ...extra,
  };
}

/** Starts `vitest run` (or another command) in a consumer project with exactly the given environment. */
export function runIn(project: string, command: string, args: string[], env: Record<string, string>) {
  return execa(command, args, {
    cwd: project,
    env,
    extendEnv: false,
    reject: false,
    all: true,
    preferLocal: true,
    localDir: repoRoot,
    stdin: 'ignore',
  });
}

/** Command lines (with their pids first) of the QEMU processes whose arguments mention a state directory. */
export function qemuProcessesUsing(dir: string): string[] {
  return execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' })
    .split('\n')
    .filter((line) => line.includes('qemu-system') && line.includes(dir));
}
