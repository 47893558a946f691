// Starts the built VM through the NixOS run-script contract and records its pid.
import { spawn } from 'node:child_process';
import { closeSync, constants, fchmodSync, openSync } from 'node:fs';
import { access, mkdir, rm } from 'node:fs/promises';
import { K3sVmError } from '../errors.js';
import { files } from '../state/files.js';
import type { InstanceDir } from '../state/instance-dir.js';
import { qmpArgument } from '../state/qemu-identity.js';
import { diskFormatArgs } from './disk.js';
import { guestAgentOptions, guestAgentSocketOf } from './guest-agent.js';

export interface LaunchPlan {
  readonly runScript: string;
  readonly diskImage: string;
  readonly tmpDir: string;
  readonly qmpSocket: string;
  readonly apiPort: number;
  readonly sshPort: number;
  readonly accel: 'kvm' | 'tcg';
  readonly kernelParams: readonly string[];
  /** More QEMU options (no spaces inside one), such as the snapshot restore's `-loadvm TAG`. @default [] */
  readonly extraQemuOptions?: readonly string[] | undefined;
  /** The environment the run script starts from (the contract's variables are added to it). */
  readonly env: Readonly<Record<string, string | undefined>>;
}

/**
 * What the kernel is told under emulation, before the user's parameters (so theirs win). With
 * more than one CPU the kernel finds their TSCs out of step under TCG and falls back to the
 * emulated HPET, where every clock read is a device access: K3s and the rest of Kubernetes read
 * the clock all the time, and an idle control plane of two CPUs then kept 1.4 host cores busy
 * instead of 0.6 (docs/vm.md). QEMU drives every CPU's TSC from one virtual clock, so it is
 * trusted. Under KVM the kernel uses kvm-clock and needs nothing.
 */
export const emulationKernelParams = ['tsc=reliable'] as const;

/**
 * The environment for run-<name>-vm. Every forward is bound to 127.0.0.1: QEMU's
 * `hostfwd=tcp::PORT-…` (empty address) would listen on every interface.
 */
export function runScriptEnv(plan: Omit<LaunchPlan, 'env'>): Record<string, string> {
  // The config layer refuses state directories with spaces or commas: QEMU_OPTS is
  // word-split and -qmp's value is comma-separated.
  return {
    NIX_DISK_IMAGE: plan.diskImage,
    TMPDIR: plan.tmpDir,
    USE_TMPDIR: '1',
    QEMU_NET_OPTS: [`hostfwd=tcp:127.0.0.1:${plan.apiPort}-:6443`, `hostfwd=tcp:127.0.0.1:${plan.sshPort}-:22`].join(','),
    QEMU_OPTS: [
      // A later -machine wins over the accel= list in the script's own -machine (kvm:tcg, which
      // would silently use a broken KVM; some nixpkgs revisions' qemu-common.nix even write
      // hvf:tcg for x86_64-linux, read at 04b74253), keeping its machine type (q35 there).
      '-machine',
      `accel=${plan.accel}`,
      '-qmp',
      qmpArgument(plan.qmpSocket),
      '-no-reboot',
      // Where a guest with QEMU's guest agent is reached without SSH (a rewind sets the clock there).
      ...guestAgentOptions(guestAgentSocketOf(plan.qmpSocket)),
      ...(plan.extraQemuOptions ?? []),
    ].join(' '),
    QEMU_KERNEL_PARAMS: [...(plan.accel === 'tcg' ? emulationKernelParams : []), ...plan.kernelParams].join(' '),
  };
}

export interface LaunchedVm {
  readonly pid: number;
  /** Resolves with QEMU's exit code when it ends (only while this process is its parent). */
  readonly exited: Promise<number | null>;
  /**
   * Stops the launched process group by signal (SIGTERM, then SIGKILL) while it is still this
   * process's child, so the pid cannot belong to anyone else: for before the run script has
   * exec'd QEMU, when the pid does not look like QEMU yet.
   */
  terminate(): Promise<void>;
  /** Sends SIGTERM to the launched process group if it is still this process's child (for exit work, src/at-exit.ts). */
  terminateSync(): void;
}

function startFailed(plan: LaunchPlan, error: Error): K3sVmError {
  return new K3sVmError('QEMU_START_FAILED', `could not run ${plan.runScript}: ${error.message}`, {
    cause: error,
    hint: 'rebuild the VM (k3s-vm setup) and check that the script is executable',
  });
}

/**
 * Runs the script detached (its own process group, so Ctrl-C in the terminal reaches the
 * test runner, which decides), serial console and QEMU's own messages appended to the
 * serial log. The script execs QEMU, so the pid is QEMU's. The boot checks an existing disk
 * image before (DiskImage.check); the script runs with umask 077, so the disk it creates is 0600.
 */
export async function launchVm(dir: InstanceDir, plan: LaunchPlan): Promise<LaunchedVm> {
  try {
    await access(plan.runScript, constants.X_OK);
  } catch (error) {
    throw startFailed(plan, error as Error);
  }
  let log: number;
  try {
    await mkdir(plan.tmpDir, { recursive: true, mode: 0o700 });
    await rm(plan.qmpSocket, { force: true });
    await rm(guestAgentSocketOf(plan.qmpSocket), { force: true });
    log = openSync(dir.file(files.serialLog), 'a', 0o600);
    fchmodSync(log, 0o600);
  } catch (error) {
    throw dir.ioError(error, (error as NodeJS.ErrnoException).path ?? dir.file(files.serialLog), 'prepare');
  }
  let child;
  try {
    // The shell only sets the umask and execs the script, which execs QEMU: the pid stays QEMU's.
    child = spawn('/bin/sh', ['-c', 'umask 077 && exec "$0" "$@"', plan.runScript, ...diskFormatArgs], {
      cwd: plan.tmpDir,
      detached: true,
      stdio: ['ignore', log, log],
      env: { ...plan.env, ...runScriptEnv(plan) },
    });
  } finally {
    closeSync(log);
  }
  let ended = false;
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      ended = true;
      resolve(code);
    });
    child.once('error', () => {
      ended = true;
      resolve(null);
    });
  });
  const signalGroup = (signal: NodeJS.Signals) => {
    if (ended || child.pid === undefined) return;
    try {
      process.kill(-child.pid, signal);
    } catch {
      // Gone already.
    }
  };
  const pid = await new Promise<number>((resolve, reject) => {
    child.once('spawn', () => resolve(child.pid!));
    child.once('error', (error) => reject(startFailed(plan, error)));
  });
  // Unreferenced: a VM left running (kept, or attached to by later runs) must not keep this
  // process alive.
  child.unref();
  const terminate = async () => {
    // Referenced while it is waited for: an unreferenced child's exit, and unreferenced timers,
    // do not keep the event loop going, so Node would end the process in the middle of the wait
    // (its top-level await unsettled, exit code 13) before the caller could report anything.
    child.ref();
    let timer: NodeJS.Timeout | undefined;
    const timeout = (ms: number) =>
      new Promise<'timeout'>((resolve) => {
        timer = setTimeout(resolve, ms, 'timeout');
      });
    try {
      signalGroup('SIGTERM');
      if ((await Promise.race([exited, timeout(3000)])) === 'timeout') {
        signalGroup('SIGKILL');
        await Promise.race([exited, timeout(3000)]);
      }
    } finally {
      clearTimeout(timer);
      child.unref();
    }
  };
  return { pid, exited, terminate, terminateSync: () => signalGroup('SIGTERM') };
}
