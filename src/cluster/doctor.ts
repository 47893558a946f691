// Doctor: checks what a start needs, each with how to fix it. The CLI prints them.
import { constants } from 'node:fs';
import { access, mkdir } from 'node:fs/promises';
import { execa } from 'execa';
import { packageNixDir } from '../config/resolve-config.js';
import { describeNixpkgs } from '../nix/nixpkgs.js';
import { kvmUdevRule, probeKvm } from '../qemu/accel-probe.js';
import { isPortFree } from '../qemu/ports.js';
import type { ClusterOptions } from './options.js';
import { configOf } from './prepare.js';

export interface Check {
  readonly name: string;
  readonly level: 'ok' | 'warn' | 'fail';
  readonly detail: string;
  /** What to do when the check is not ok. */
  readonly fix?: string;
}

async function firstLineOf(command: string, args: string[]): Promise<string | undefined> {
  const result = await execa(command, args, { reject: false, timeout: 10_000 });
  return result.exitCode === 0 ? String(result.stdout).split('\n')[0]?.trim() : undefined;
}

/** Runs every check (the config is resolved first: a bad value is an error, not a check). */
export async function diagnose(options: ClusterOptions = {}): Promise<Check[]> {
  const config = configOf(options);
  const checks: Check[] = [];
  const nix = await firstLineOf(config.nixBuild, ['--version']);
  checks.push(
    nix
      ? { name: 'Nix', level: 'ok', detail: nix }
      : {
          name: 'Nix',
          level: 'fail',
          detail: `${config.nixBuild} not found`,
          fix: 'install Nix: https://nixos.org/download (Debian/Ubuntu: apt-get install nix-bin)',
        },
  );
  if (config.nix === packageNixDir) {
    // Only the package's own expression takes the nixpkgs option; another expression brings its own.
    const nixpkgs = await describeNixpkgs(config.nixpkgs, { signal: AbortSignal.timeout(20_000) });
    checks.push(
      nixpkgs.inStore === true
        ? { name: 'nixpkgs', level: 'ok', detail: `${nixpkgs.source}: in the Nix store` }
        : nixpkgs.inStore === false
          ? {
              name: 'nixpkgs',
              level: 'warn',
              detail: `${nixpkgs.source}: not in the Nix store yet; the first build downloads it`,
              fix: `nothing, if this machine can reach the internet; otherwise point ${config.names.nixpkgs} at a nixpkgs checkout`,
            }
          : { name: 'nixpkgs', level: 'warn', detail: `${nixpkgs.source}: cannot tell whether it is in the Nix store` },
    );
  }
  const qemu = await firstLineOf('qemu-system-x86_64', ['--version']);
  checks.push(
    qemu
      ? { name: 'QEMU', level: 'ok', detail: qemu }
      : {
          name: 'QEMU',
          level: 'fail',
          detail: 'qemu-system-x86_64 not found',
          fix: 'install QEMU (Debian/Ubuntu: apt-get install qemu-system-x86 qemu-utils)',
        },
  );
  const qemuImg = await firstLineOf('qemu-img', ['--version']);
  checks.push(
    qemuImg
      ? { name: 'qemu-img', level: 'ok', detail: qemuImg }
      : { name: 'qemu-img', level: 'fail', detail: 'qemu-img not found', fix: 'install qemu-utils' },
  );
  if (qemu) {
    const probe = await probeKvm();
    checks.push(
      probe.usable
        ? { name: 'KVM', level: 'ok', detail: `usable (probe ${probe.durationMs} ms)` }
        : {
            name: 'KVM',
            level: config.accel === 'kvm' ? 'fail' : 'warn',
            detail: `not usable: ${probe.reason}; the VM would run under software emulation (slow)`,
            fix: `enable virtualisation in the firmware and join the kvm group; on CI runners: ${kvmUdevRule}`,
          },
    );
  }
  for (const [variable, port] of [
    [config.names.apiPort, config.apiPort],
    [config.names.sshPort, config.sshPort],
  ] as const) {
    if (port === undefined) continue;
    checks.push(
      (await isPortFree(port))
        ? { name: variable, level: 'ok', detail: `port ${port} is free` }
        : {
            name: variable,
            level: 'warn',
            detail: `port ${port} is in use (fine if this VM is running)`,
            fix: `choose another ${variable}`,
          },
    );
  }
  try {
    await mkdir(config.dir, { recursive: true, mode: 0o700 });
    await access(config.dir, constants.W_OK);
    checks.push({ name: 'state directory', level: 'ok', detail: config.dir });
  } catch (error) {
    checks.push({
      name: 'state directory',
      level: 'fail',
      detail: `${config.dir}: ${(error as Error).message}`,
      fix: `point ${config.names.dir} at a writable directory`,
    });
  }
  const kubectl = await firstLineOf('kubectl', ['version', '--client']);
  checks.push(
    kubectl
      ? { name: 'kubectl', level: 'ok', detail: kubectl }
      : {
          name: 'kubectl',
          level: 'warn',
          detail: 'not found (only k3s-vm kubectl needs it)',
          fix: 'https://kubernetes.io/docs/tasks/tools/',
        },
  );
  return checks;
}
