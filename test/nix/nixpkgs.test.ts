// Which nixpkgs a build uses and whether it is already in the store, told without the network.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { packageNixDir } from '../../src/config/resolve-config.js';
import { describeNixpkgs, nixpkgsSource, storedTarball } from '../../src/nix/nixpkgs.js';
import { repoRoot } from '../helpers/test-guest.js';

const root = mkdtempSync(join(tmpdir(), 'k3s-vm-nixpkgs-'));

describe('describeNixpkgs', () => {
  it("finds the package's nix/ folder", () => {
    expect(packageNixDir.replace(/\/$/, '')).toBe(join(repoRoot, 'nix'));
  });

  it('names the pinned revision by default', async () => {
    const source = await nixpkgsSource('');
    expect(source).toMatchObject({
      kind: 'pinned',
      url: expect.stringMatching(/^https:\/\/github\.com\/NixOS\/nixpkgs\/archive\/[0-9a-f]{40}\.tar\.gz$/),
    });
    const described = await describeNixpkgs('');
    const { sha256 } = JSON.parse(readFileSync(join(repoRoot, 'nix', 'nixpkgs.json'), 'utf8')) as { sha256: string };
    expect(described.source).toMatch(
      sha256
        ? /^nixpkgs [0-9a-f]{40} \(nixos-\d\d\.\d\d, pinned\)$/
        : /^nixpkgs [0-9a-f]{40} \(nixos-\d\d\.\d\d, pinned without a sha256: Nix checks the download again hourly\)$/,
    );
    expect([true, false]).toContain(described.inStore);
  });

  it('says "not in the store" for a tarball it has never fetched, at once and without downloading', async () => {
    const started = Date.now();
    expect(await describeNixpkgs('https://nixpkgs.invalid/never-fetched.tar.gz')).toEqual({
      source: 'nixpkgs from https://nixpkgs.invalid/never-fetched.tar.gz',
      inStore: false,
    });
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('says "in the store" for a tarball Nix has fetched before, even once its source is gone', async () => {
    const tree = join(root, 'tree', 'nixpkgs');
    mkdirSync(join(tree, 'nixos', 'lib'), { recursive: true });
    writeFileSync(join(tree, 'nixos', 'lib', 'eval-config.nix'), `# ${process.pid}-${Date.now()}\n{ ... }: { }\n`);
    const tarball = join(root, 'nixpkgs.tar.gz');
    await execa('tar', ['-C', join(root, 'tree'), '-czf', tarball, 'nixpkgs']);
    const url = `file://${tarball}`;
    // An earlier build's download (a file URL needs no proxy, so it is fetched here first).
    const fetched = await execa('nix-instantiate', ['--eval', '-E', `builtins.fetchTarball ${JSON.stringify(url)}`]);
    rmSync(tarball);
    expect(await storedTarball(url, '')).toEqual({ inStore: true, path: JSON.parse(String(fetched.stdout)) });
  });

  it('checks a path and the search path on the file system', async () => {
    const tree = join(root, 'checkout');
    mkdirSync(join(tree, 'nixos', 'lib'), { recursive: true });
    writeFileSync(join(tree, 'nixos', 'lib', 'eval-config.nix'), '{ ... }: { }\n');
    expect(await describeNixpkgs(tree)).toEqual({ source: `nixpkgs at ${tree}`, inStore: true, path: tree });
    expect(await describeNixpkgs(join(root, 'missing'))).toMatchObject({ inStore: false });
    const searchPath = await describeNixpkgs('<nixpkgs>');
    expect(searchPath.source).toMatch(/^<nixpkgs> from the Nix search path/);
  });

  it('reports a setting nix/parameters.nix refuses', async () => {
    expect(await describeNixpkgs('25.05')).toMatchObject({
      inStore: undefined,
      source: expect.stringContaining('must be empty (the pinned revision)'),
    });
  });
});

describe('the pin', () => {
  it('is the same revision in nix/nixpkgs.json and in the flake input', async () => {
    const { readFileSync } = await import('node:fs');
    const pin = JSON.parse(readFileSync(join(repoRoot, 'nix', 'nixpkgs.json'), 'utf8')) as { rev: string; branch: string };
    expect(pin.rev).toMatch(/^[0-9a-f]{40}$/);
    expect(pin.branch).toMatch(/^nixos-\d\d\.\d\d$/);
    expect(readFileSync(join(repoRoot, 'flake.nix'), 'utf8')).toContain(`inputs.nixpkgs.url = "github:NixOS/nixpkgs/${pin.rev}";`);
  });
});
