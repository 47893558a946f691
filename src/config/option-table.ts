// The one table of options: for each, its K3S_VM_* variable, CLI flag, parser, default and help.
// resolveConfig, the CLI's flags and --help, and the README's table are all made from it.
import { defaults, emulationTimeoutFactor } from './defaults.js';
import type { Accel, K3sVmOptions } from './options.js';

/** Thrown by a parser: what would have been accepted. The config layer adds where the value came from. */
export class InvalidValue extends Error {
  constructor(readonly accepted: string) {
    super(`expected ${accepted}`);
  }
}

export interface OptionSpec<T> {
  /** The environment variable, if the option has one. */
  readonly variable?: string;
  /** The CLI flag without its dashes (`memory` for `--memory`), if the option has one. */
  readonly flag?: string;
  /** The flag's value placeholder in --help (`MIB`); absent for a switch. */
  readonly flagValue?: string;
  /** The default as the documentation shows it. */
  readonly defaultText: string;
  /** One line of help. */
  readonly help: string;
  /** Turns a value from code (typed) or from a variable or flag (text) into the option's value. */
  readonly parse: (value: unknown) => T;
}

/** A default as the help and the README's table show it: written once, in defaults.ts. */
function code(value: string | number | readonly string[]): string {
  return typeof value === 'object' ? `\`[${value.map((item) => `'${item}'`).join(', ')}]\`` : `\`${value}\``;
}

type OptionTable = { readonly [K in keyof K3sVmOptions]-?: OptionSpec<NonNullable<K3sVmOptions[K]>> };

// The rules below for name, cpus, memoryMiB, diskSizeMiB, k3sVersion, extraK3sFlags and disable
// are the ones nix/parameters.nix enforces; test/config/parameter-rules.test.ts holds both to
// one table of cases.

function integer(min: number, max: number, accepted: string): (value: unknown) => number {
  return (value) => {
    const n = typeof value === 'number' ? value : typeof value === 'string' && /^\s*\d+\s*$/.test(value) ? Number(value) : Number.NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) throw new InvalidValue(accepted);
    return n;
  };
}

const truthy = ['1', 'true', 'yes', 'on'];
const falsy = ['0', 'false', 'no', 'off'];

function boolean(value: unknown): boolean {
  if (typeof value === 'boolean') return value;
  const text = typeof value === 'string' ? value.trim().toLowerCase() : undefined;
  if (text !== undefined && truthy.includes(text)) return true;
  if (text !== undefined && falsy.includes(text)) return false;
  throw new InvalidValue(`one of ${[...truthy, ...falsy].join(', ')}`);
}

function oneOf<T extends string>(choices: readonly T[]): (value: unknown) => T {
  return (value) => {
    const text = typeof value === 'string' ? value.trim().toLowerCase() : undefined;
    const found = choices.find((choice) => choice === text);
    if (found === undefined) throw new InvalidValue(choices.join(', ').replace(/, ([^,]*)$/, ' or $1'));
    return found;
  };
}

function matching(pattern: RegExp, accepted: string): (value: unknown) => string {
  return (value) => {
    if (typeof value !== 'string' || !pattern.test(value)) throw new InvalidValue(accepted);
    return value;
  };
}

/** A list from code; each item must match. */
function list(item: RegExp, accepted: string): (value: unknown) => readonly string[] {
  return (value) => {
    if (!Array.isArray(value) || value.some((entry) => typeof entry !== 'string' || !item.test(entry))) throw new InvalidValue(accepted);
    return [...(value as string[])];
  };
}

/** A list from code (an array), or from a variable or flag (comma-separated); each item must match. */
function commaList(item: RegExp, accepted: string): (value: unknown) => readonly string[] {
  const parseList = list(item, accepted);
  return (value) =>
    parseList(
      typeof value === 'string'
        ? value
            .split(',')
            .map((part) => part.trim())
            .filter(Boolean)
        : value,
    );
}

/** A path: any text without NUL. Relative paths are resolved against the project root later. */
const path = matching(/^[^\0]+$/, 'a path');

const port = integer(1024, 65_535, 'a TCP port from 1024 to 65535');

/** A lower-case RFC 1123 label that starts with a letter: host name, node name and run-script name. */
export const namePattern = /^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$/;
export const minMemoryMiB = 1024;
/** An archive K3s imports from its images directory: the file name endings it looks for (nix/parameters.nix has the same rule). */
export const preloadImagePattern = /^[^\0\n\r]+\.(tar|tar\.gz|tgz|tar\.zst|tzst|tar\.bz2|tbz|tar\.lz4)$/;
export const minDiskSizeMiB = 2048;

export const optionTable: OptionTable = {
  projectRoot: {
    defaultText: 'the nearest folder upwards with a `package.json`',
    help: 'what relative paths are relative to',
    parse: path,
  },
  dir: {
    variable: 'K3S_VM_DIR',
    flag: 'dir',
    flagValue: 'PATH',
    defaultText: `${code(defaults.dirName)} in the project root`,
    help: 'state directory (keys, disk, logs)',
    parse: path,
  },
  name: {
    variable: 'K3S_VM_NAME',
    flag: 'name',
    flagValue: 'NAME',
    defaultText: code(defaults.name),
    help: 'VM name, host name and node name',
    parse: matching(
      namePattern,
      'a host name: 1 to 63 lower-case letters, digits and dashes, starting with a letter and ending with a letter or digit',
    ),
  },
  cpus: {
    variable: 'K3S_VM_CPUS',
    flag: 'cpus',
    flagValue: 'N',
    defaultText: code(defaults.cpus),
    help: 'virtual CPUs',
    parse: integer(1, 256, 'a whole number of CPUs from 1 to 256'),
  },
  memoryMiB: {
    variable: 'K3S_VM_MEMORY',
    flag: 'memory',
    flagValue: 'MIB',
    defaultText: code(defaults.memoryMiB),
    help: `memory in MiB (at least ${minMemoryMiB})`,
    parse: integer(minMemoryMiB, 1_048_576, `a whole number of MiB, at least ${minMemoryMiB} (for example 4096)`),
  },
  diskSizeMiB: {
    variable: 'K3S_VM_DISK_SIZE',
    flag: 'disk-size',
    flagValue: 'MIB',
    defaultText: code(defaults.diskSizeMiB),
    help: `disk size in MiB (sparse; at least ${minDiskSizeMiB}; an existing disk grows to a larger size)`,
    parse: integer(minDiskSizeMiB, 16_777_216, `a whole number of MiB, at least ${minDiskSizeMiB} (for example 20480)`),
  },
  accel: {
    variable: 'K3S_VM_ACCEL',
    flag: 'accel',
    flagValue: 'MODE',
    defaultText: code(defaults.accel),
    help: '`auto`, `kvm` or `tcg` (below)',
    parse: oneOf<Accel>(['auto', 'kvm', 'tcg']),
  },
  keep: {
    variable: 'K3S_VM_KEEP',
    defaultText: 'off',
    help: 'keep the VM running after the run (`1`, `true`, …)',
    parse: boolean,
  },
  apiPort: {
    variable: 'K3S_VM_API_PORT',
    flag: 'api-port',
    flagValue: 'PORT',
    defaultText: 'a free port',
    help: 'host port of the API server',
    parse: port,
  },
  sshPort: {
    variable: 'K3S_VM_SSH_PORT',
    flag: 'ssh-port',
    flagValue: 'PORT',
    defaultText: 'a free port',
    help: 'host port of SSH',
    parse: port,
  },
  timeoutSeconds: {
    variable: 'K3S_VM_TIMEOUT',
    flag: 'timeout',
    flagValue: 'SECONDS',
    defaultText: `${defaults.timeoutSeconds} (${defaults.timeoutSeconds * emulationTimeoutFactor} under emulation)`,
    help: 'deadline for boot and readiness',
    parse: integer(1, 86_400, 'a whole number of seconds from 1 to 86400'),
  },
  nix: {
    variable: 'K3S_VM_NIX',
    flag: 'nix',
    flagValue: 'PATH',
    defaultText: "the package's `nix/`",
    help: 'Nix file or directory that builds the VM',
    parse: path,
  },
  nixpkgs: {
    variable: 'K3S_VM_NIXPKGS',
    flag: 'nixpkgs',
    flagValue: 'SOURCE',
    defaultText: 'the pinned revision',
    help: 'nixpkgs to build from: a channel (`nixos-25.05`), a path, a tarball URL, or `<nixpkgs>`',
    // The forms nix/parameters.nix `nixpkgsSource` takes (a relative path is made absolute first).
    parse: matching(
      /^(<nixpkgs>|(nixos|nixpkgs)-[0-9a-z][0-9a-z.-]*|[./~][^\0]*|https:\/\/[^\s\0]+)$/,
      'a channel name such as nixos-25.05, a path, an https URL of a tarball, or <nixpkgs>',
    ),
  },
  k3sVersion: {
    variable: 'K3S_VM_K3S',
    flag: 'k3s',
    flagValue: 'VERSION',
    defaultText: "nixpkgs' `k3s`",
    help: 'K3s minor version, such as `1.31`',
    parse: (value) => {
      const match = typeof value === 'string' ? /^v?(\d+)[._](\d+)$/.exec(value.trim()) : null;
      if (!match) throw new InvalidValue('a K3s minor version such as 1.31 (or 1_31)');
      return `${match[1]}_${match[2]}`;
    },
  },
  offline: {
    variable: 'K3S_VM_OFFLINE',
    flag: 'offline',
    defaultText: 'off',
    help: 'cut the guest off from the network (the forwarded ports still work)',
    parse: boolean,
  },
  debug: {
    variable: 'K3S_VM_DEBUG',
    flag: 'debug',
    defaultText: 'off',
    help: 'debug lines',
    parse: boolean,
  },
  kubeconfig: {
    variable: 'K3S_VM_KUBECONFIG',
    flag: 'kubeconfig',
    flagValue: 'PATH',
    defaultText: 'none: boot a VM',
    help: 'use the existing cluster of this kubeconfig instead of a VM',
    parse: path,
  },
  context: {
    variable: 'K3S_VM_CONTEXT',
    flag: 'context',
    flagValue: 'NAME',
    defaultText: "the kubeconfig's current context",
    help: 'the context of the existing cluster',
    parse: matching(/^[^\s\0]+$/, 'a context name'),
  },
  allowContexts: {
    variable: 'K3S_VM_ALLOW_CONTEXTS',
    flag: 'allow-contexts',
    flagValue: 'PATTERNS',
    defaultText: 'none',
    help: 'contexts an existing cluster may have, comma-separated, `*` as a wildcard',
    parse: commaList(/^[A-Za-z0-9*@:._/-]+$/, 'comma-separated context names, with * as a wildcard'),
  },
  sweepAfterSeconds: {
    variable: 'K3S_VM_SWEEP_AFTER',
    flag: 'sweep-after',
    flagValue: 'SECONDS',
    defaultText: code(defaults.sweepAfterSeconds),
    help: "delete a dead run's namespaces this long after its last heartbeat",
    parse: integer(30, 30 * 86_400, 'a whole number of seconds from 30 to 2592000'),
  },
  images: {
    variable: 'K3S_VM_IMAGES',
    flag: 'images',
    flagValue: 'PATHS',
    defaultText: '`[]`',
    help: 'image archives (docker or OCI, `.tar` or `.tar.gz`) imported into the cluster after readiness, comma-separated; only new ones are imported',
    parse: commaList(/^[^\0]+$/, 'image archive paths (comma-separated in a variable or flag)'),
  },
  manifests: {
    variable: 'K3S_VM_MANIFESTS',
    flag: 'manifests',
    flagValue: 'PATHS',
    defaultText: '`[]`',
    help: 'manifest files and directories server-side applied after the images, in order, comma-separated; only changed files are applied again',
    parse: commaList(/^[^\0]+$/, 'manifest file or directory paths (comma-separated in a variable or flag)'),
  },
  waitForRollout: {
    variable: 'K3S_VM_WAIT_FOR_ROLLOUT',
    flag: 'wait-for-rollout',
    defaultText: 'off',
    help: 'after applying manifests, wait until their Deployments have rolled out',
    parse: boolean,
  },
  diagnostics: {
    variable: 'K3S_VM_DIAGNOSTICS',
    defaultText: 'on',
    help: "when a test that used a namespace fixture fails, attach its namespace's events, pod states and log tails to the test's report",
    parse: boolean,
  },
  keepFailedNamespaces: {
    variable: 'K3S_VM_KEEP_FAILED_NAMESPACES',
    defaultText: 'off',
    help: "keep a failed test's namespace for inspection instead of deleting it (its name is printed)",
    parse: boolean,
  },
  preloadImages: {
    variable: 'K3S_VM_PRELOAD_IMAGES',
    defaultText: '`[]`',
    help: 'image archives built into the VM with Nix (`services.k3s.images`), comma-separated: `.tar`, `.tar.gz`, `.tgz`, `.tar.zst`',
    parse: commaList(preloadImagePattern, 'image archive paths ending in .tar, .tar.gz, .tgz, .tar.zst, .tzst, .tar.bz2, .tbz or .tar.lz4'),
  },
  snapshot: {
    variable: 'K3S_VM_SNAPSHOT',
    defaultText: 'off',
    // Off by default: a restore returns the disk to the saved ready state (what earlier runs
    // wrote is gone), and the snapshot costs disk space the size of the guest's used memory.
    help: 'save the VM once ready and restore that instead of booting (a restore starts from the saved cluster; see Snapshots)',
    parse: boolean,
  },
  rewind: {
    variable: 'K3S_VM_REWIND',
    defaultText: '`off`',
    help: '`file`: the Vitest adapter rewinds the VM to its snapshot before each test file (needs `K3S_VM_SNAPSHOT`, files run one at a time, no other run on the VM; see Snapshots)',
    parse: oneOf<'off' | 'file'>(['off', 'file']),
  },
  extraK3sFlags: {
    defaultText: '`[]`',
    help: "extra `k3s server` flags, such as `['--kubelet-arg=max-pods=200']`",
    parse: (value) => {
      // Only code gives flags: a comma-separated variable could not hold a flag with a comma.
      if (!Array.isArray(value) || value.some((flag) => typeof flag !== 'string' || !/^[^\n\r\0]+$/.test(flag))) {
        throw new InvalidValue('an array of non-empty strings without line breaks');
      }
      return [...(value as string[])];
    },
  },
  disable: {
    variable: 'K3S_VM_DISABLE',
    flag: 'disable',
    flagValue: 'NAMES',
    defaultText: code(defaults.disable),
    help: 'packaged components to disable, comma-separated (`traefik,metrics-server`); replaces the default list',
    parse: commaList(
      /^[a-z0-9][a-z0-9-]*$/,
      'K3s component names such as traefik or metrics-server (comma-separated in a variable or flag)',
    ),
  },
  airgapImages: {
    defaultText: '`true`',
    help: "preload K3s's air-gap images (the cluster then needs no registry)",
    parse: boolean,
  },
  extraModules: {
    defaultText: '`[]`',
    help: 'NixOS modules (paths) added to the VM',
    parse: list(/^[^\0]+$/, 'an array of paths of NixOS module files'),
  },
  kernelParams: {
    defaultText: '`[]`',
    help: 'extra kernel command-line parameters for the guest',
    parse: list(/^\S+$/, 'an array of kernel parameters without spaces'),
  },
  nixBuild: {
    defaultText: '`nix-build` from `PATH`',
    help: 'the nix-build program',
    parse: path,
  },
};

export type OptionKey = keyof OptionTable;

/** Every option in the table's order. */
export const optionKeys = Object.keys(optionTable) as OptionKey[];

/** The option a CLI flag sets, if any. */
export function optionOfFlag(flag: string): OptionKey | undefined {
  return optionKeys.find((key) => optionTable[key].flag === flag);
}

/** The options that have a CLI flag, in `node:util` parseArgs form. */
export function flagDefinitions(): Record<string, { type: 'string' | 'boolean' }> {
  const definitions: Record<string, { type: 'string' | 'boolean' }> = {};
  for (const key of optionKeys) {
    const spec = optionTable[key];
    if (spec.flag) definitions[spec.flag] = { type: spec.flagValue ? 'string' : 'boolean' };
  }
  return definitions;
}

const plain = (text: string) => text.replace(/`/g, '');

/** The flag lines of --help: `--memory MIB  memory in MiB (K3S_VM_MEMORY, default 4096)`. */
export function flagHelpLines(): string[] {
  const rows = optionKeys
    .filter((key) => optionTable[key].flag)
    .map((key) => {
      const spec = optionTable[key];
      const left = `--${spec.flag}${spec.flagValue ? ` ${spec.flagValue}` : ''}`;
      return [left, `${plain(spec.help)} (${spec.variable}, default ${plain(spec.defaultText)})`] as const;
    });
  const width = Math.max(...rows.map(([left]) => left.length));
  return rows.map(([left, right]) => `  ${left.padEnd(width)}  ${right}`);
}

/** The README's configuration table (Markdown), row for row. */
export function configurationTable(): string {
  const lines = ['| variable | flag | option | default | meaning |', '| --- | --- | --- | --- | --- |'];
  for (const key of optionKeys) {
    const spec = optionTable[key];
    const variable = spec.variable ? `\`${spec.variable}\`` : '';
    const flag = spec.flag ? `\`--${spec.flag}\`` : '';
    lines.push(`| ${variable} | ${flag} | \`${key}\` | ${spec.defaultText} | ${spec.help} |`);
  }
  return lines.join('\n');
}
