// The example suites against the real NixOS K3s VM from nix/, where Nix and working KVM exist (scripts/e2e.sh runs this).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { buildCluster, stopCluster, type BuildResult } from '../../src/cluster/index.js';
import { resolveConfig } from '../../src/config/resolve-config.js';
import { probeKvm } from '../../src/qemu/accel-probe.js';
import { qemuToolsOf } from '../../src/qemu/tools.js';
import { refuseKnownDeadKvm } from '../../src/qemu/accel.js';
import { freshStateDir, repoRoot } from '../support/test-guest.js';

/** How many tests examples/ holds: what the examples run must report as passed. */
function countExamples(folder = join(repoRoot, 'examples')): number {
  return readdirSync(folder)
    .filter((name) => name.endsWith('.test.ts'))
    .reduce((sum, name) => sum + (readFileSync(join(folder, name), 'utf8').match(/^\s*(?:it|test)(?:\.\w+)*\(/gm)?.length ?? 0), 0);
}

const required = process.env['K3S_VM_E2E'] === '1';
/** The user's Nix settings, not the ones the test-guest suite sets for its own builds. */
const env = { PATH: process.env['PATH'], HOME: process.env['HOME'], XDG_CACHE_HOME: process.env['XDG_CACHE_HOME'] };

/** Why the VM cannot run here, as far as can be told before building it; undefined when it may. */
async function unavailableBeforeBuild(): Promise<string | undefined> {
  if ((await execa('nix-build', ['--version'], { reject: false })).exitCode !== 0) return 'Nix is not installed';
  const { cacheDir } = resolveConfig({ projectRoot: repoRoot }, env);
  return refuseKnownDeadKvm({ accel: 'kvm', cacheDir }).then(
    () => undefined,
    (error: unknown) => (error as Error).message,
  );
}

const unavailable = await unavailableBeforeBuild();
if (unavailable && !required) console.log(`skipped: the real NixOS VM cannot run on this host: ${unavailable}`);

describe.skipIf(Boolean(unavailable) && !required)('the NixOS K3s VM', () => {
  const first = freshStateDir('e2e');
  const second = freshStateDir('e2e-2');
  let build: BuildResult | undefined;
  afterAll(() => stopCluster({ dir: first, env, force: true }).catch(() => undefined));

  it('can run here (K3S_VM_E2E=1 asks for it, so an unusable host fails instead of skipping)', () => {
    expect(unavailable, 'this host cannot run the real VM').toBeUndefined();
  });

  it("builds, and KVM runs guest code with the VM's own QEMU", async () => {
    build = await buildCluster({ projectRoot: repoRoot, dir: first, env });
    const { qemu } = await qemuToolsOf(build.runScript, env['PATH']);
    expect(qemu).toMatch(/^\/nix\/store\//);
    const probe = await probeKvm({ qemu, timeoutMs: 5000 });
    expect(probe.reason).toBe('');
    expect(probe.usable).toBe(true);
  });

  it('runs every example against it', async () => {
    const examples = countExamples();
    expect(examples).toBeGreaterThan(0);
    const run = await execa('vitest', ['run', '--config', join(repoRoot, 'examples', 'vitest.config.ts')], {
      cwd: repoRoot,
      preferLocal: true,
      reject: false,
      all: true,
      env: { K3S_VM_DIR: first, K3S_VM_ACCEL: 'kvm' },
    });
    expect(run.exitCode, run.all).toBe(0);
    expect(run.all).toMatch(new RegExp(`Tests\\s+${examples} passed \\(${examples}\\)`));
  });

  it('shares its build with a second state directory: nothing built, the same store path', async () => {
    expect(build).toBeDefined();
    const again = await buildCluster({ projectRoot: repoRoot, dir: second, env });
    expect(again).toMatchObject({ storePath: build?.storePath, builtOrFetched: false });
  });
});
