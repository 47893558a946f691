// Which nixpkgs a build will use, and whether it is already in the Nix store (answered without the network).
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { execa } from 'execa';
import { packageNixDir } from '../config/resolve-config.js';

/** Where nixpkgs comes from, as nix/parameters.nix resolves a nixpkgs setting. */
export interface NixpkgsSource {
  readonly kind: 'pinned' | 'search-path' | 'channel' | 'path' | 'url';
  /** For people: "nixpkgs <rev> (nixos-26.05, pinned)", "the nixos-25.05 channel", … */
  readonly description: string;
  readonly url?: string;
  readonly sha256?: string;
  readonly path?: string;
}

export interface NixpkgsDescription {
  /** Which nixpkgs the build will use. */
  readonly source: string;
  /** Whether it is already on this machine (true), would be downloaded (false), or cannot be told (undefined). */
  readonly inStore: boolean | undefined;
  /** Its store path or folder, when known. */
  readonly path?: string;
}

export interface DescribeNixpkgsOptions {
  /** The Nix expression folder holding parameters.nix. @default the package's nix/ */
  readonly nixDir?: string;
  /** @default 'nix-instantiate' */
  readonly nixInstantiate?: string;
  readonly signal?: AbortSignal | undefined;
}

/**
 * Settings that keep a fetchTarball from reaching the network: a tarball already fetched
 * is answered from Nix's cache however old it is, and anything else fails at once on an
 * unreachable proxy instead of downloading.
 */
const noNetworkOptions = [
  '--option',
  'tarball-ttl',
  '2147483647',
  '--option',
  'download-attempts',
  '1',
  '--option',
  'connect-timeout',
  '1',
];
const unreachableProxy = 'http://127.0.0.1:9';
const noNetworkEnv = {
  http_proxy: unreachableProxy,
  https_proxy: unreachableProxy,
  HTTP_PROXY: unreachableProxy,
  HTTPS_PROXY: unreachableProxy,
  all_proxy: unreachableProxy,
  ALL_PROXY: unreachableProxy,
};

/** Resolves a nixpkgs setting ('' = the pinned revision) with nix/parameters.nix itself. */
export async function nixpkgsSource(spec: string, options: DescribeNixpkgsOptions = {}): Promise<NixpkgsSource> {
  const parameters = resolve(options.nixDir ?? packageNixDir, 'parameters.nix');
  // Both strings reach Nix as arguments: a path written into the expression would have to be
  // a valid Nix path literal (a folder with a space or a `#` in its name is not).
  const result = await execa(
    options.nixInstantiate ?? 'nix-instantiate',
    [
      '--eval',
      '--strict',
      '--json',
      '-E',
      '{ parameters, spec }: (import (/. + parameters)).nixpkgsSource spec',
      '--argstr',
      'parameters',
      parameters,
      '--argstr',
      'spec',
      spec,
    ],
    { reject: false, cancelSignal: options.signal },
  );
  if (result.exitCode !== 0)
    throw new Error(
      String(result.stderr)
        .replace(/^error: /, '')
        .trim() || `nix-instantiate exited with ${result.exitCode}`,
    );
  return JSON.parse(String(result.stdout)) as NixpkgsSource;
}

/** Which nixpkgs a build with this setting uses and whether it is already in the store; never downloads. */
export async function describeNixpkgs(spec: string, options: DescribeNixpkgsOptions = {}): Promise<NixpkgsDescription> {
  const nixInstantiate = options.nixInstantiate ?? 'nix-instantiate';
  let source: NixpkgsSource;
  try {
    source = await nixpkgsSource(spec, options);
  } catch (error) {
    return { source: `${spec || '(pinned)'}: ${(error as Error).message}`, inStore: undefined };
  }
  if (source.kind === 'search-path') {
    const found = await execa(nixInstantiate, ['--find-file', 'nixpkgs'], { reject: false, cancelSignal: options.signal });
    return found.exitCode === 0
      ? { source: `${source.description} (${String(found.stdout).trim()})`, inStore: true, path: String(found.stdout).trim() }
      : { source: `${source.description}, which is not set`, inStore: false };
  }
  if (source.kind === 'path') {
    const present = existsSync(join(source.path ?? '', 'nixos', 'lib', 'eval-config.nix'));
    return { source: source.description, inStore: present, ...(present ? { path: source.path } : {}) };
  }
  const stored = await storedTarball(source.url ?? '', source.sha256 ?? '', options);
  return { source: source.description, ...stored };
}

/**
 * Whether Nix already has the unpacked tarball of this URL (as builtins.fetchTarball would
 * fetch it): true with its store path, false when getting it would need a download,
 * undefined when Nix cannot say.
 */
export async function storedTarball(
  url: string,
  sha256: string,
  options: Pick<DescribeNixpkgsOptions, 'nixInstantiate' | 'signal'> = {},
): Promise<{ inStore: boolean | undefined; path?: string }> {
  const fetch = sha256
    ? 'builtins.fetchTarball { url = builtins.getEnv "K3S_VM_TARBALL_URL"; sha256 = builtins.getEnv "K3S_VM_TARBALL_SHA256"; }'
    : 'builtins.fetchTarball (builtins.getEnv "K3S_VM_TARBALL_URL")';
  const probe = await execa(options.nixInstantiate ?? 'nix-instantiate', ['--eval', '-E', fetch, ...noNetworkOptions], {
    reject: false,
    cancelSignal: options.signal,
    env: { ...noNetworkEnv, K3S_VM_TARBALL_URL: url, K3S_VM_TARBALL_SHA256: sha256 },
  });
  if (probe.exitCode === 0) return { inStore: true, path: JSON.parse(String(probe.stdout)) as string };
  if (/unable to download/.test(String(probe.stderr))) return { inStore: false };
  return { inStore: undefined };
}
