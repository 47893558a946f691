// Which nixpkgs a build uses and whether it is already in the store, told without the network.
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { packageNixDir } from '../../src/config/resolve-config.js';
import { describeNixpkgs, nixpkgsSource, storedTarball } from '../../src/nix/nixpkgs.js';
import { repoRoot } from '../support/test-guest.js';

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

  it('reads nix/parameters.nix from a folder whose name is no Nix path literal (a space, a #)', async () => {
    const nixDir = join(root, 'a folder #1', 'nix');
    mkdirSync(nixDir, { recursive: true });
    for (const file of ['parameters.nix', 'nixpkgs.json']) copyFileSync(join(repoRoot, 'nix', file), join(nixDir, file));
    expect(await nixpkgsSource('', { nixDir })).toMatchObject({ kind: 'pinned' });
    expect(await nixpkgsSource('nixos-25.11', { nixDir })).toMatchObject({ kind: 'channel' });
  });

  it('reports a setting nix/parameters.nix refuses', async () => {
    expect(await describeNixpkgs('25.05')).toMatchObject({
      inStore: undefined,
      source: expect.stringContaining('must be empty (the pinned revision)'),
    });
  });
});

describe('the pin', () => {
  const pin = JSON.parse(readFileSync(join(repoRoot, 'nix', 'nixpkgs.json'), 'utf8')) as {
    rev: string;
    branch: string;
    sha256: string;
  };

  it('is the same revision in nix/nixpkgs.json, the flake input, flake.lock and the README', () => {
    expect(pin.rev).toMatch(/^[0-9a-f]{40}$/);
    expect(pin.branch).toMatch(/^nixos-\d\d\.\d\d$/);
    expect(readFileSync(join(repoRoot, 'flake.nix'), 'utf8')).toContain(`inputs.nixpkgs.url = "github:NixOS/nixpkgs/${pin.rev}";`);
    const lock = JSON.parse(readFileSync(join(repoRoot, 'flake.lock'), 'utf8')) as FlakeLock;
    const node = lock.nodes[lock.nodes[lock.root]?.inputs?.['nixpkgs'] ?? ''];
    expect(node?.locked).toMatchObject({ type: 'github', owner: 'NixOS', repo: 'nixpkgs', rev: pin.rev });
    expect(node?.original).toEqual({ type: 'github', owner: 'NixOS', repo: 'nixpkgs', rev: pin.rev });
    // What scripts/pin-nixpkgs.mjs replaces when it moves the pin.
    expect(readFileSync(join(repoRoot, 'README.md'), 'utf8')).toContain(`\`${pin.rev}\`, ${pin.branch}`);
  });

  it("records one hash for the tarball: nixpkgs.json's sha256 is flake.lock's narHash", async () => {
    expect(pin.sha256).toMatch(/^[0-9a-z]{52}$/);
    const lock = JSON.parse(readFileSync(join(repoRoot, 'flake.lock'), 'utf8')) as FlakeLock;
    const sri = await execa('nix', ['--extra-experimental-features', 'nix-command', 'hash', 'to-sri', '--type', 'sha256', pin.sha256]);
    expect(lock.nodes['nixpkgs']?.locked?.narHash).toBe(String(sri.stdout).trim());
  });
});

interface FlakeLock {
  readonly root: string;
  readonly nodes: Record<
    string,
    { inputs?: Record<string, string>; locked?: Record<string, unknown>; original?: Record<string, unknown> } | undefined
  >;
}
