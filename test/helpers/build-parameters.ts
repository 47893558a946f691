// Build parameters for the Nix tests, made the way a start makes them (resolveConfig, then buildParameters).
import { buildParameters, type BuildParameters } from '../../src/config/fingerprint.js';
import type { StartOptions } from '../../src/cluster/index.js';
import { resolveConfig } from '../../src/config/resolve-config.js';
import { repoRoot } from './test-guest.js';

/** A small VM's parameters, with a public key of its own (so each call names a new derivation). */
export function testBuildParameters(label: string, options: Partial<StartOptions> = {}): BuildParameters {
  const config = resolveConfig({ projectRoot: repoRoot, name: label, memoryMiB: 1024, diskSizeMiB: 2048, ...options }, {});
  return buildParameters(config, `ssh-ed25519 AAAA ${label}-${process.pid}-${Date.now()}`);
}
