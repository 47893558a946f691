// Build parameters for the Nix tests, made the way a start makes them (resolveConfig, then buildParameters).
import { buildParameters, type BuildParameters } from '../../src/config/fingerprint.js';
import type { StartOptions } from '../../src/cluster/index.js';
import { resolveConfig } from '../../src/config/resolve-config.js';
import { repoRoot } from './test-guest.js';

/**
 * A small VM's parameters, with a K3s flag of its own (so each call names a new derivation of
 * test/support/tiny-vm.nix, which Nix then really builds).
 */
export function testBuildParameters(label: string, options: Partial<StartOptions> = {}): BuildParameters {
  const unique = `--node-label=k3s-vm-test=${label}-${process.pid}-${Date.now()}`;
  const config = resolveConfig(
    {
      projectRoot: repoRoot,
      name: label,
      memoryMiB: 1024,
      diskSizeMiB: 2048,
      ...options,
      extraK3sFlags: [...(options.extraK3sFlags ?? []), unique],
    },
    {},
  );
  return buildParameters(config);
}
