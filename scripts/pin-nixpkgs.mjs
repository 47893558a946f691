#!/usr/bin/env node
// Moves the VM's nixpkgs pin: one revision, with the sha256 of its tarball, written to
// nix/nixpkgs.json, the flake input (flake.nix, flake.lock) and the README, or checks it.
//
//   node scripts/pin-nixpkgs.mjs [BRANCH | REV] [--branch BRANCH] [--no-flake-lock]
//   node scripts/pin-nixpkgs.mjs --check
//
// BRANCH (say nixos-26.05) pins the commit that branch's channel is at now (a commit its
// release tests passed); REV (40 hex digits) pins that commit, named as of --branch or the
// branch already pinned. Without either, the pinned branch's channel is asked again.
// --check downloads the pinned tarball and fails when its sha256 is not the recorded one
// (it warns when none is recorded). Needs the network (channels.nixos.org, GitHub) and Nix;
// --channels and --archives name other places to read from (a mirror), --root another
// checkout. The tarball lands in the Nix store under the name fetchTarball gives it, so once
// its sha256 is recorded the next build does not download it again.
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const usage = 'usage: node scripts/pin-nixpkgs.mjs [BRANCH | REV] [--branch BRANCH] [--no-flake-lock] | --check';

function fail(message) {
  process.stderr.write(`pin-nixpkgs: ${message}\n`);
  process.exit(1);
}

function warn(message) {
  // A GitHub Actions annotation when run there, a plain line otherwise.
  process.stderr.write(process.env.GITHUB_ACTIONS === 'true' ? `::warning::${message}\n` : `pin-nixpkgs: warning: ${message}\n`);
}

let parsed;
try {
  parsed = parseArgs({
    allowPositionals: true,
    options: {
      branch: { type: 'string' },
      check: { type: 'boolean', default: false },
      'no-flake-lock': { type: 'boolean', default: false },
      channels: { type: 'string', default: 'https://channels.nixos.org' },
      archives: { type: 'string' },
      root: { type: 'string', default: resolve(dirname(fileURLToPath(import.meta.url)), '..') },
    },
  });
} catch (error) {
  fail(`${error.message}\n${usage}`);
}
const { values: options, positionals } = parsed;
if (positionals.length > 1 || (options.check && positionals.length > 0)) fail(usage);

const root = resolve(options.root);
const pinFile = join(root, 'nix', 'nixpkgs.json');
const revPattern = /^[0-9a-f]{40}$/;

/** Evaluates `body` with nix/parameters.nix as `parameters` and the given strings bound: its rules are the ones the build uses. */
function fromParameters(body, strings) {
  // Strings, the root too, reach Nix as arguments: a path written into the expression would
  // have to be a valid Nix path literal (no spaces, for one).
  const bound = { ...strings, root };
  const names = Object.keys(bound);
  const args = names.flatMap((name) => ['--argstr', name, bound[name]]);
  const expression = `{ ${names.join(', ')} }: let parameters = import (/. + root + "/nix/parameters.nix"); in ${body}`;
  const result = spawnSync('nix-instantiate', ['--eval', '--json', '--strict', '-E', expression, ...args], { encoding: 'utf8' });
  if (result.error) fail(`cannot run nix-instantiate (is Nix installed?): ${result.error.message}`);
  if (result.status !== 0) fail(`nix-instantiate failed on nix/parameters.nix:\n${result.stderr.trim()}`);
  return JSON.parse(result.stdout);
}

/** Whether nix/parameters.nix takes `name` for a channel. */
function isBranch(name) {
  return fromParameters(
    'let source = builtins.tryEval (parameters.nixpkgsSource spec).kind; in source.success && source.value == "channel"',
    {
      spec: name,
    },
  );
}

/** Where the tarball of a revision is: --archives, or the URL nix/parameters.nix builds from. */
function archiveOf(rev) {
  return options.archives ? `${options.archives}/${rev}.tar.gz` : fromParameters('parameters.revisionTarball rev', { rev });
}

function readPin() {
  try {
    return JSON.parse(readFileSync(pinFile, 'utf8'));
  } catch (error) {
    return fail(`cannot read ${pinFile}: ${error.message}`);
  }
}

/** The commit a channel is at: channels.nixos.org/<branch>/git-revision. */
async function channelRevision(branch) {
  const url = `${options.channels}/${branch}/git-revision`;
  let response;
  try {
    response = await fetch(url, { signal: AbortSignal.timeout(60_000) });
  } catch (error) {
    return fail(`cannot read ${url}: ${error.cause?.message ?? error.message}`);
  }
  if (!response.ok) fail(`cannot read ${url}: HTTP ${response.status} (is "${branch}" a channel?)`);
  const rev = (await response.text()).trim();
  if (!revPattern.test(rev)) fail(`${url} does not hold a commit hash: ${JSON.stringify(rev.slice(0, 80))}`);
  return rev;
}

/** The sha256 (Nix base32) of the unpacked tarball, as builtins.fetchTarball checks it; the tarball is added to the store. */
function prefetch(rev) {
  const url = archiveOf(rev);
  process.stderr.write(`pin-nixpkgs: downloading ${url}\n`);
  // --name source: the store path builtins.fetchTarball { url; sha256; } looks for.
  const result = spawnSync('nix-prefetch-url', ['--unpack', '--name', 'source', url], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (result.error) fail(`cannot run nix-prefetch-url (is Nix installed?): ${result.error.message}`);
  if (result.status !== 0) fail(`nix-prefetch-url ${url} failed:\n${result.stderr.trim()}`);
  const sha256 = result.stdout.trim().split('\n').at(-1);
  if (!/^[0-9a-z]{52}$/.test(sha256)) fail(`nix-prefetch-url printed no sha256: ${JSON.stringify(result.stdout)}`);
  return sha256;
}

/** `file`'s text with `from` replaced by `to`; fails when `from` is not there, so no copy of the pin goes stale unnoticed. */
function replacedIn(file, from, to) {
  const path = join(root, file);
  const text = readFileSync(path, 'utf8');
  if (!text.includes(from)) fail(`${path} does not name the current pin (${from}); update it by hand`);
  return [path, text.split(from).join(to)];
}

const pin = readPin();

if (options.check) {
  if (!revPattern.test(pin.rev ?? '')) fail(`${pinFile} pins no revision`);
  const sha256 = prefetch(pin.rev);
  if (!pin.sha256) {
    warn(`nix/nixpkgs.json records no sha256 for ${pin.rev}; it is ${sha256} (node scripts/pin-nixpkgs.mjs ${pin.rev} records it)`);
  } else if (pin.sha256 !== sha256) {
    fail(`the tarball of ${pin.rev} has sha256 ${sha256}, and nix/nixpkgs.json records ${pin.sha256}`);
  } else {
    process.stderr.write(`pin-nixpkgs: ${pin.rev} (${pin.branch}) matches its sha256\n`);
  }
  process.exit(0);
}

const wanted = positionals[0] ?? pin.branch;
let branch = options.branch ?? pin.branch;
let rev;
if (revPattern.test(wanted)) {
  rev = wanted;
} else if (isBranch(wanted)) {
  if (options.branch && options.branch !== wanted) fail(`two branches given: ${wanted} and --branch ${options.branch}`);
  branch = wanted;
  rev = await channelRevision(branch);
} else {
  fail(`"${wanted}" is neither a commit hash (40 hex digits) nor a branch such as nixos-26.05\n${usage}`);
}
if (!isBranch(branch ?? '')) fail(`"${branch}" is not a branch such as nixos-26.05`);

const sha256 = prefetch(rev);
// Every file is checked before any is written.
const edits = [
  replacedIn('flake.nix', `github:NixOS/nixpkgs/${pin.rev}`, `github:NixOS/nixpkgs/${rev}`),
  replacedIn('README.md', `\`${pin.rev}\`, ${pin.branch}`, `\`${rev}\`, ${branch}`),
  [pinFile, `${JSON.stringify({ branch, rev, sha256 }, null, 2)}\n`],
];
for (const [path, text] of edits) writeFileSync(path, text);
process.stderr.write(`pin-nixpkgs: pinned ${rev} (${branch}), sha256 ${sha256}\n`);

if (!options['no-flake-lock']) {
  // Nix locks the input again because its URL changed; every other entry stays as it was.
  const result = spawnSync('nix', ['--extra-experimental-features', 'nix-command flakes', 'flake', 'lock'], {
    cwd: root,
    encoding: 'utf8',
    stdio: ['ignore', 'inherit', 'pipe'],
  });
  if (result.error || result.status !== 0) {
    fail(
      `nix flake lock failed, so flake.lock was not updated (nix/nixpkgs.json, flake.nix and the README name the new revision; run nix flake lock again):\n${(result.stderr ?? result.error?.message ?? '').trim()}`,
    );
  }
  process.stderr.write('pin-nixpkgs: wrote flake.lock\n');
}
