// Every .nix file parses, and the package's NixOS VM fails the way the fixture explains without nixpkgs.
import { readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { buildParameters } from '../../src/config/fingerprint.js';
import { packageNixDir, resolveConfig } from '../../src/config/resolve-config.js';
import { buildVm } from '../../src/nix/build-vm.js';
import { InstanceDir } from '../../src/state/instance-dir.js';
import { nixpkgsPath } from '../support/host.js';
import { freshStateDir, recordingLogger, repoRoot } from '../support/test-guest.js';

function nixFiles(folder: string): string[] {
  return readdirSync(folder, { withFileTypes: true }).flatMap((entry) => {
    if (entry.name === 'node_modules' || entry.name.startsWith('.') || entry.name.startsWith('result')) return [];
    const path = join(folder, entry.name);
    if (entry.isDirectory()) return nixFiles(path);
    return entry.name.endsWith('.nix') ? [path] : [];
  });
}

describe('the Nix expressions', () => {
  const all = nixFiles(repoRoot);

  it('include the NixOS VM, the flake and the test guest', () => {
    const names = all.map((path) => relative(repoRoot, path));
    expect(names).toEqual(expect.arrayContaining(['flake.nix', 'nix/default.nix', 'nix/vm.nix', 'fixtures/test-guest/default.nix']));
  });

  it.each(all.map((path) => [relative(repoRoot, path), path]))('%s passes nix-instantiate --parse', async (_name, path) => {
    const result = await execa('nix-instantiate', ['--parse', path], { reject: false });
    expect(result.exitCode, result.stderr).toBe(0);
  });

  it.skipIf(Boolean(nixpkgsPath()))(
    `the package's nix/ with nixpkgs "<nixpkgs>" stops at the missing search path entry with the remedy${nixpkgsPath() ? ' (skipped: this host has <nixpkgs>)' : ''}`,
    async () => {
      const config = resolveConfig({ projectRoot: repoRoot }, {});
      expect(config.nix).toBe(packageNixDir);
      const dir = new InstanceDir(freshStateDir('nixos'));
      await dir.ensure();
      const parameters = { ...buildParameters(config), nixpkgs: '<nixpkgs>' };
      const error = await buildVm(dir, { nix: config.nix, parameters, logger: recordingLogger() }).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'NIXPKGS_MISSING', hint: expect.stringContaining('NIX_PATH') });
    },
  );

  it("the package's nix/ explains a nixpkgs tarball that cannot be downloaded, after checking the parameters", async () => {
    const config = resolveConfig({ projectRoot: repoRoot }, {});
    const dir = new InstanceDir(freshStateDir('nixos'));
    await dir.ensure();
    // The .invalid domain never resolves (RFC 2606), on any host.
    const parameters = { ...buildParameters(config), nixpkgs: 'https://nixpkgs.invalid/nixpkgs.tar.gz' };
    const error = await buildVm(dir, { nix: config.nix, parameters, logger: recordingLogger() }).catch((e: unknown) => e);
    expect(error).toMatchObject({
      code: 'NIXPKGS_MISSING',
      message: expect.stringContaining('https://nixpkgs.invalid/nixpkgs.tar.gz'),
      hint: expect.stringContaining('K3S_VM_NIXPKGS'),
    });
    // A bad parameter is reported before any download is tried.
    const refused = await buildVm(dir, {
      nix: config.nix,
      parameters: { ...parameters, memoryMiB: 512 },
      logger: recordingLogger(),
      force: true,
    }).catch((e: unknown) => e);
    expect(refused).toMatchObject({
      code: 'NIX_EVAL_FAILED',
      message: expect.stringContaining('memoryMiB must be a whole number of MiB from 1024'),
    });
  }, 60_000);
});
