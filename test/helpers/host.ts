// What this host can do: Nix, nixpkgs on the search path, working KVM.
import { execaSync } from 'execa';
import { resolveConfig } from '../../src/config/resolve-config.js';
import { probeKvmCached } from '../../src/qemu/accel-probe.js';
import { repoRoot } from './test-guest.js';

export function nixpkgsPath(): string | undefined {
  const result = execaSync('nix-instantiate', ['--find-file', 'nixpkgs'], { reject: false });
  return result.exitCode === 0 ? String(result.stdout).trim() : undefined;
}

/** The cache directory of this test run (vitest.config.ts sets XDG_CACHE_HOME), where the KVM probe is kept. */
export function testCacheDir(): string {
  return resolveConfig({ projectRoot: repoRoot }, { XDG_CACHE_HOME: process.env['XDG_CACHE_HOME'] }).cacheDir;
}

/** Why the real NixOS VM cannot run here, or undefined when it can. */
export async function realVmUnavailable(): Promise<string | undefined> {
  const reasons: string[] = [];
  // The package's nix/ fetches its pinned nixpkgs itself: Nix and working KVM are what it needs.
  if (execaSync('nix-build', ['--version'], { reject: false }).exitCode !== 0) reasons.push('Nix is not installed');
  const kvm = await probeKvmCached(testCacheDir());
  if (!kvm.usable) reasons.push(`KVM is not usable (${kvm.reason})`);
  return reasons.length ? reasons.join('; ') : undefined;
}
