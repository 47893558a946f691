// The example suites against the real NixOS K3s VM from nix/, where Nix with nixpkgs and working KVM exist.
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { stopCluster } from '../../src/cluster/index.js';
import { realVmUnavailable } from '../helpers/host.js';
import { freshStateDir, repoRoot } from '../helpers/test-guest.js';

const unavailable = await realVmUnavailable();
const required = process.env['K3S_VM_E2E'] === '1';
if (!required) console.log('skipped: "is available when K3S_VM_E2E=1 asks for it" (K3S_VM_E2E is not 1)');
if (unavailable) console.log(`skipped: the real NixOS VM cannot run on this host: ${unavailable}`);

describe('the NixOS K3s VM', () => {
  const dir = freshStateDir('e2e');
  afterAll(() => stopCluster({ dir, env: {}, force: true }).catch(() => undefined));

  it.runIf(required)('is available when K3S_VM_E2E=1 asks for it', () => {
    expect(unavailable, 'K3S_VM_E2E=1 but this host cannot run the real VM').toBeUndefined();
  });

  it.skipIf(Boolean(unavailable))(
    `runs examples/k8s-namespaces and examples/k8s-pull-request-pod${unavailable ? ` (skipped: ${unavailable})` : ''}`,
    async () => {
      const run = await execa('vitest', ['run', '--config', join(repoRoot, 'examples', 'vitest.config.ts')], {
        cwd: repoRoot,
        preferLocal: true,
        reject: false,
        all: true,
        env: { K3S_VM_DIR: dir, K3S_VM_ACCEL: 'kvm', NIX_CONFIG: '' },
      });
      expect(run.exitCode, run.all).toBe(0);
      expect(run.all).toMatch(/Tests\s+7 passed \(7\)/);
    },
    60 * 60_000,
  );
});
