import { chmodSync, copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execaSync } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildVm, nixBuildArgs } from '../../src/nix/build-vm.js';
import { files } from '../../src/state/files.js';
import { InstanceDir } from '../../src/state/instance-dir.js';
import { testBuildParameters } from '../support/build-parameters.js';
import { recordingLogger } from '../support/test-guest.js';

const root = mkdtempSync(join(tmpdir(), 'k3s-vm-nix-'));
const counter = join(root, 'nix-build-calls');
const wrapper = join(root, 'nix-build-counting');
const params = testBuildParameters('tiny', { cpus: 2 });
// (A K3s flag of its own makes this run's derivation new, so Nix really builds and its output streams.)

const calls = () => (existsSync(counter) ? readFileSync(counter, 'utf8').split('\n').filter(Boolean).length : 0);

beforeAll(() => {
  const nixBuild = execaSync('sh', ['-c', 'command -v nix-build']).stdout.trim();
  // A small executable stands in for nix-build only to count calls; it runs the real one.
  writeFileSync(wrapper, `#!/bin/sh\necho call >> '${counter}'\nexec '${nixBuild}' "$@"\n`);
  chmodSync(wrapper, 0o755);
});

function expression(name: string, body?: string): string {
  const folder = join(root, name);
  execaSync('mkdir', ['-p', folder]);
  if (body === undefined) copyFileSync(join(import.meta.dirname, '..', 'support', 'tiny-vm.nix'), join(folder, 'default.nix'));
  else writeFileSync(join(folder, 'default.nix'), body);
  return folder;
}

describe('buildVm with the real nix-build', () => {
  it('passes the parameters as function arguments, never as pasted text', () => {
    const args = nixBuildArgs('/expr', '/out', {
      ...params,
      extraK3sFlags: ['--disable=traefik', '--node-label=a "quoted" b'],
    });
    expect(args).toEqual([
      '/expr',
      '--out-link',
      '/out',
      '--argstr',
      'nixpkgsSpec',
      '',
      '--argstr',
      'name',
      'tiny',
      '--arg',
      'cpus',
      '2',
      '--arg',
      'memoryMiB',
      '1024',
      '--arg',
      'diskSizeMiB',
      '2048',
      '--argstr',
      'k3sVersion',
      '',
      '--arg',
      'offline',
      'false',
      '--argstr',
      'extraK3sFlagsJson',
      '["--disable=traefik","--node-label=a \\"quoted\\" b"]',
      '--argstr',
      'disableJson',
      '["traefik"]',
      '--arg',
      'airgapImages',
      'true',
      '--argstr',
      'extraModulesJson',
      '[]',
    ]);
  });

  it('builds once, keeps the out-link as a GC root, and skips Nix while nothing changes', async () => {
    const nix = expression('counted');
    const dir = new InstanceDir(join(root, 'state-counted'));
    await dir.ensure();
    const logger = recordingLogger();
    const before = calls();

    const first = await buildVm(dir, { nix, parameters: params, nixBuild: wrapper, logger });
    expect(first.invokedNix).toBe(true);
    expect(calls()).toBe(before + 1);
    expect(first.runScript).toBe(join(first.storePath, 'bin', 'run-tiny-vm'));
    expect(first.storePath).toMatch(/^\/nix\/store\/[a-z0-9]{32}-tiny-vm-tiny$/);
    expect(execaSync(first.runScript).stdout).toBe('run tiny 2 1024');
    // The out-link is registered as a GC root.
    const roots = execaSync('nix-store', ['--gc', '--print-roots']).stdout;
    expect(roots).toContain(dir.file(files.buildLink));
    // Nix's own output is streamed as progress.
    expect(logger.lines.some((l) => l.includes('tiny-vm: building tiny with 2 CPUs'))).toBe(true);

    const second = await buildVm(dir, { nix, parameters: params, nixBuild: wrapper, logger });
    expect(second).toMatchObject({ invokedNix: false, storePath: first.storePath });
    expect(calls()).toBe(before + 1);

    const changed = await buildVm(dir, { nix, parameters: { ...params, cpus: 4 }, nixBuild: wrapper, logger });
    expect(changed.invokedNix).toBe(true);
    expect(changed.storePath).not.toBe(first.storePath);
    expect(calls()).toBe(before + 2);

    appendFileSync(join(nix, 'default.nix'), '\n# an edit\n');
    expect((await buildVm(dir, { nix, parameters: { ...params, cpus: 4 }, nixBuild: wrapper, logger })).invokedNix).toBe(true);
    expect(calls()).toBe(before + 3);

    rmSync(dir.file(files.buildLink));
    expect((await buildVm(dir, { nix, parameters: { ...params, cpus: 4 }, nixBuild: wrapper, logger })).invokedNix).toBe(true);
    expect(calls()).toBe(before + 4);
  });

  it('explains a missing Nix and how to install it', async () => {
    const dir = new InstanceDir(join(root, 'state-no-nix'));
    await dir.ensure();
    await expect(
      buildVm(dir, { nix: expression('no-nix'), parameters: params, nixBuild: join(root, 'no-such-nix-build'), logger: recordingLogger() }),
    ).rejects.toMatchObject({
      code: 'NIX_MISSING',
      hint: expect.stringMatching(/install Nix/),
    });
  });

  it('explains that <nixpkgs> is not on the search path', async (context) => {
    const probe = execaSync('nix-instantiate', ['--eval', '-E', '<nixpkgs>'], { reject: false, env: { NIX_PATH: '' } });
    if (probe.exitCode === 0) {
      console.log('skipped: this host has <nixpkgs> on its default search path, so its absence cannot be shown here');
      context.skip();
    }
    const dir = new InstanceDir(join(root, 'state-nixpkgs'));
    await dir.ensure();
    const nix = expression('needs-nixpkgs', '{ ... }: (import <nixpkgs> {}).hello\n');
    const error = await buildVm(dir, { nix, parameters: params, nixBuild: 'nix-build', logger: recordingLogger() }).catch(
      (e: unknown) => e,
    );
    expect(error).toMatchObject({ code: 'NIXPKGS_MISSING', hint: expect.stringContaining('nix-channel --add') });
    expect((error as { hint: string }).hint).toMatch(/^leave K3S_VM_NIXPKGS empty to build from the pinned nixpkgs/);
    // The remedy names the setting the way the user gave it.
    const byFlag = await buildVm(dir, {
      nix,
      parameters: params,
      logger: recordingLogger(),
      force: true,
      names: { nixpkgs: '--nixpkgs' },
    }).catch((e: unknown) => e);
    expect((byFlag as { hint: string }).hint).toMatch(/^leave --nixpkgs empty to build from the pinned nixpkgs/);
  });

  it("shows Nix's own message for an evaluation error", async () => {
    const dir = new InstanceDir(join(root, 'state-eval'));
    await dir.ensure();
    const nix = expression('eval-error', '{ ... }: throw "k3sVersion 1_99 is not packaged"\n');
    await expect(buildVm(dir, { nix, parameters: params, logger: recordingLogger() })).rejects.toMatchObject({
      code: 'NIX_EVAL_FAILED',
      message: expect.stringContaining('k3sVersion 1_99 is not packaged'),
    });
  });

  it('reports a failing builder with the end of its log and how to see all of it', async () => {
    const dir = new InstanceDir(join(root, 'state-build'));
    await dir.ensure();
    const nix = expression(
      'build-error',
      '{ ... }: builtins.derivation { name = "broken-vm"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo the disk image step failed; exit 3" ]; }\n',
    );
    const error = await buildVm(dir, { nix, parameters: params, logger: recordingLogger() }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'NIX_BUILD_FAILED', details: expect.stringContaining('the disk image step failed') });
    expect((error as { hint: string }).hint).toMatch(/nix log \/nix\/store\/.+\.drv/);
  });

  it('refuses a build that has no run-*-vm script', async () => {
    const dir = new InstanceDir(join(root, 'state-no-script'));
    await dir.ensure();
    const nix = expression(
      'no-script',
      '{ ... }: builtins.derivation { name = "not-a-vm"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "/bin/mkdir -p $out" ]; }\n',
    );
    await expect(buildVm(dir, { nix, parameters: params, logger: recordingLogger() })).rejects.toMatchObject({
      code: 'RUN_SCRIPT_MISSING',
    });
  });
});
