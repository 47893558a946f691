// scripts/pin-nixpkgs.mjs against a channel and an archive served from this machine: the real
// nix-prefetch-url, the real store, the real fetchTarball, in a copy of the pinned files.
import { randomBytes } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../support/test-guest.js';

const work = mkdtempSync(join(tmpdir(), 'k3s-vm-pin-'));
const script = join(repoRoot, 'scripts', 'pin-nixpkgs.mjs');
/** A made-up revision of a made-up nixpkgs, new each run, so nothing is in the store ahead of the test. */
const rev = randomBytes(20).toString('hex');
const branch = 'nixos-99.11';
let server: Server;
let base: string;
let served = 0;

beforeAll(async () => {
  const tree = join(work, 'tree', `nixpkgs-${rev}`);
  mkdirSync(join(tree, 'nixos', 'lib'), { recursive: true });
  writeFileSync(join(tree, 'nixos', 'lib', 'eval-config.nix'), `# ${rev}\n{ ... }: { }\n`);
  await execa('tar', ['-C', join(work, 'tree'), '-czf', join(work, `${rev}.tar.gz`), `nixpkgs-${rev}`]);
  server = createServer((request, response) => {
    served += 1;
    if (request.url === `/channels/${branch}/git-revision`) response.end(`${rev}\n`);
    else if (request.url === `/archives/${rev}.tar.gz`) response.end(readFileSync(join(work, `${rev}.tar.gz`)));
    else response.writeHead(404).end();
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((done) => server.close(() => done())));

/** A checkout with copies of the files that hold the pin. */
function checkout(label: string): string {
  const root = join(work, label);
  mkdirSync(root, { recursive: true });
  // nix/ whole: the script takes its rules (what a branch is, where a revision's tarball is) from nix/parameters.nix.
  for (const file of ['nix', 'flake.nix', 'README.md']) cpSync(join(repoRoot, file), join(root, file), { recursive: true });
  return root;
}

const pin = (root: string, ...args: string[]) =>
  execa('node', [script, ...args, '--root', root, '--channels', `${base}/channels`, '--archives', `${base}/archives`], {
    reject: false,
    env: { GITHUB_ACTIONS: '' },
  });
const pinned = (root: string) => JSON.parse(readFileSync(join(root, 'nix', 'nixpkgs.json'), 'utf8')) as Record<string, string>;
const original = JSON.parse(readFileSync(join(repoRoot, 'nix', 'nixpkgs.json'), 'utf8')) as { rev: string; branch: string };

describe('scripts/pin-nixpkgs.mjs', () => {
  it("pins the commit a branch's channel is at, with the sha256 fetchTarball checks, in nix/nixpkgs.json, flake.nix and the README", async () => {
    // A checkout whose path has a space, as a project folder may.
    const root = checkout('by branch');
    const result = await pin(root, branch, '--no-flake-lock');
    expect(result.stderr).toContain(`pinned ${rev} (${branch})`);
    expect(result.exitCode).toBe(0);
    const { sha256 } = pinned(root);
    expect(pinned(root)).toEqual({ branch, rev, sha256: expect.stringMatching(/^[0-9a-z]{52}$/) });
    // The same hash Nix computes itself over the unpacked tree.
    const treeHash = await execa('nix-hash', ['--type', 'sha256', '--base32', join(work, 'tree', `nixpkgs-${rev}`)]);
    expect(sha256).toBe(treeHash.stdout.trim());
    expect(readFileSync(join(root, 'flake.nix'), 'utf8')).toContain(`inputs.nixpkgs.url = "github:NixOS/nixpkgs/${rev}";`);
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    expect(readme).toContain(`\`${rev}\`, ${branch}`);
    expect(readme).not.toContain(original.rev);

    // What nix/parameters.nix builds from the pin (the GitHub URL and the sha256) is now in the
    // store under the name fetchTarball looks for: evaluating it downloads nothing.
    const servedBefore = served;
    const fetched = await execa('nix-instantiate', [
      '--eval',
      '-E',
      `builtins.fetchTarball { url = "https://github.com/NixOS/nixpkgs/archive/${rev}.tar.gz"; sha256 = "${sha256}"; }`,
    ]);
    expect(JSON.parse(fetched.stdout)).toMatch(/^\/nix\/store\/[0-9a-z]{32}-source$/);
    expect(served).toBe(servedBefore);

    // --check: the recorded sha256 matches; a wrong one is refused, naming both.
    expect((await pin(root, '--check')).stderr).toContain(`${rev} (${branch}) matches its sha256`);
    writeFileSync(join(root, 'nix', 'nixpkgs.json'), JSON.stringify({ branch, rev, sha256: '0'.repeat(52) }));
    const wrong = await pin(root, '--check');
    expect(wrong.exitCode).toBe(1);
    expect(wrong.stderr).toContain(`the tarball of ${rev} has sha256 ${sha256}, and nix/nixpkgs.json records ${'0'.repeat(52)}`);
    // No sha256 recorded: a warning that says what it is.
    writeFileSync(join(root, 'nix', 'nixpkgs.json'), JSON.stringify({ branch, rev, sha256: '' }));
    const missing = await pin(root, '--check');
    expect(missing.exitCode).toBe(0);
    expect(missing.stderr).toContain(`warning: nix/nixpkgs.json records no sha256 for ${rev}; it is ${sha256}`);
  });

  it('pins a commit given by its hash, keeping the branch it names', async () => {
    const root = checkout('by-rev');
    const result = await pin(root, rev, '--no-flake-lock');
    expect(result.exitCode).toBe(0);
    expect(pinned(root)).toMatchObject({ branch: original.branch, rev });
  });

  it('refuses what it cannot pin, naming it, and leaves every file as it was', async () => {
    const root = checkout('refused');
    const before = ['nix/nixpkgs.json', 'flake.nix', 'README.md'].map((file) => readFileSync(join(root, file), 'utf8'));
    const unknown = await pin(root, 'nixos-00.00', '--no-flake-lock');
    expect(unknown.exitCode).toBe(1);
    expect(unknown.stderr).toContain(`cannot read ${base}/channels/nixos-00.00/git-revision: HTTP 404 (is "nixos-00.00" a channel?)`);
    const garbage = await pin(root, '26.05', '--no-flake-lock');
    expect(garbage.stderr).toContain('"26.05" is neither a commit hash (40 hex digits) nor a branch such as nixos-26.05');
    const absent = await pin(root, 'f'.repeat(40), '--no-flake-lock');
    expect(absent.exitCode).toBe(1);
    expect(absent.stderr).toContain(`nix-prefetch-url ${base}/archives/${'f'.repeat(40)}.tar.gz failed`);
    expect(['nix/nixpkgs.json', 'flake.nix', 'README.md'].map((file) => readFileSync(join(root, file), 'utf8'))).toEqual(before);
  });
});
