// Every .nix file parses, and the package's NixOS VM fails the way the fixture explains without nixpkgs.
import { readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { buildParameters } from '../../src/config/fingerprint.js';
import { packageNixDir, resolveConfig } from '../../src/config/resolve-config.js';
import { buildVm } from '../../src/nix/build-vm.js';
import { InstanceDir } from '../../src/state/instance-dir.js';
import { nixpkgsPath } from '../helpers/host.js';
import { freshStateDir, recordingLogger, repoRoot } from '../helpers/test-guest.js';

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
    `the package's nix/ stops at the missing <nixpkgs> with the remedy${nixpkgsPath() ? ' (skipped: this host has nixpkgs; the real-VM test builds it)' : ''}`,
    async () => {
      const config = resolveConfig({ projectRoot: repoRoot }, {});
      expect(config.nix).toBe(packageNixDir);
      const dir = new InstanceDir(freshStateDir('nixos'));
      await dir.ensure();
      const error = await buildVm(dir, { nix: config.nix, parameters: buildParameters(config, 'ssh-ed25519 AAAA test'), logger: recordingLogger() }).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'NIXPKGS_MISSING', hint: expect.stringContaining('NIX_PATH') });
    },
  );
});
