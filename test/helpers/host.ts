// What this host can do: nixpkgs on the search path, working KVM.
import { execaSync } from 'execa';
import { probeKvm } from '../../src/qemu/accel-probe.js';

export function nixpkgsPath(): string | undefined {
  const result = execaSync('nix-instantiate', ['--find-file', 'nixpkgs'], { reject: false });
  return result.exitCode === 0 ? String(result.stdout).trim() : undefined;
}

/** Why the real NixOS VM cannot run here, or undefined when it can. */
export async function realVmUnavailable(): Promise<string | undefined> {
  const reasons: string[] = [];
  if (!nixpkgsPath()) reasons.push('<nixpkgs> is not on the Nix search path');
  const kvm = await probeKvm();
  if (!kvm.usable) reasons.push(`KVM is not usable (${kvm.reason})`);
  return reasons.length ? reasons.join('; ') : undefined;
}
