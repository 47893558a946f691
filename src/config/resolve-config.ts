// Resolves flags > options > K3S_VM_* environment > defaults into a validated config. The only reader of process.env.
import { existsSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { K3sVmError } from '../errors.js';
import { defaults } from './defaults.js';
import { setting } from './names.js';
import { buildFields } from './fingerprint.js';
import { InvalidValue, optionOfFlag, optionTable, type OptionKey } from './option-table.js';
import type { K3sVmOptions, ResolvedConfig } from './options.js';

/** The package's own Nix expression for the NixOS K3s VM. */
export const packageNixDir = fileURLToPath(new URL('../../nix/', import.meta.url));

export type Env = Readonly<Record<string, string | undefined>>;

/** The environment given, or this process's own: the one place that falls back to process.env. */
export function environment(env: Env | undefined): Env {
  return env ?? process.env;
}

/** CLI flags as `node:util` parseArgs gives them (`{ memory: '4096', debug: true }`). */
export type FlagValues = Readonly<Record<string, string | boolean | undefined>>;

/** Where a value came from, so that an error names what the user actually wrote. */
interface Layer {
  /** `--memory`, `option memoryMiB` or `K3S_VM_MEMORY`. */
  readonly label: string;
  readonly remedy: string;
  readonly raw: unknown;
}

function layersOf(key: OptionKey, options: K3sVmOptions, env: Env, flags: FlagValues): Layer[] {
  const spec = optionTable[key];
  const layers: Layer[] = [];
  const flag = spec.flag === undefined ? undefined : flags[spec.flag];
  if (spec.flag && flag !== undefined)
    layers.push({ label: `--${spec.flag}`, remedy: `fix the value of --${spec.flag}, or leave the flag out`, raw: flag });
  if (options[key] !== undefined) layers.push({ label: `option ${key}`, remedy: `fix the ${key} option given in code`, raw: options[key] });
  const variable = spec.variable === undefined ? undefined : env[spec.variable];
  // An empty variable counts as unset, the way shells and CI systems use it.
  if (spec.variable && variable !== undefined && variable !== '')
    layers.push({ label: spec.variable, remedy: `fix or unset ${spec.variable}`, raw: variable });
  return layers;
}

function invalid(layer: Layer, accepted: string): K3sVmError {
  return new K3sVmError('CONFIG_INVALID', `${layer.label}=${JSON.stringify(layer.raw)} is not valid: expected ${accepted}`, {
    hint: layer.remedy,
  });
}

/** Options that only a VM has: refused together with an existing cluster's kubeconfig. Every build parameter is one. */
const vmOnlyOptions: readonly OptionKey[] = [
  ...buildFields,
  'accel',
  'apiPort',
  'sshPort',
  'nix',
  'kernelParams',
  'images',
  'preloadImages',
  'snapshot',
  'rewind',
];

/** The folder npm would call the project root: the nearest one upwards that has a package.json. */
export function findProjectRoot(from: string): string {
  let current = resolve(from);
  for (;;) {
    if (existsSync(join(current, 'package.json'))) return current;
    const parent = dirname(current);
    if (parent === current) return resolve(from);
    current = parent;
  }
}

/**
 * Resolves CLI flags, then options from code, then `K3S_VM_*` variables, then defaults, and
 * validates every value given (also one a higher layer overrides) before anything is built
 * or started. Throws a CONFIG_INVALID K3sVmError that names the flag, option or variable,
 * the bad value and what is accepted.
 */
export function resolveConfig(
  options: K3sVmOptions = {},
  env: Env = environment(undefined),
  cwd: string = process.cwd(),
  flags: FlagValues = {},
): ResolvedConfig {
  for (const flag of Object.keys(flags)) {
    if (flags[flag] !== undefined && optionOfFlag(flag) === undefined) {
      throw new K3sVmError('CONFIG_INVALID', `--${flag} is not a k3s-vm flag`, { hint: 'k3s-vm --help lists the flags' });
    }
  }
  const sources: Partial<Record<OptionKey, Layer>> = {};
  const value = <K extends OptionKey>(key: K): NonNullable<K3sVmOptions[K]> | undefined => {
    let chosen: NonNullable<K3sVmOptions[K]> | undefined;
    for (const layer of layersOf(key, options, env, flags)) {
      let parsed: NonNullable<K3sVmOptions[K]>;
      try {
        parsed = optionTable[key].parse(layer.raw) as NonNullable<K3sVmOptions[K]>;
      } catch (error) {
        if (error instanceof InvalidValue) throw invalid(layer, error.accepted);
        throw error;
      }
      if (chosen === undefined) {
        chosen = parsed;
        sources[key] = layer;
      }
    }
    return chosen;
  };

  const projectRoot = resolve(value('projectRoot') ?? findProjectRoot(cwd));
  const fromRoot = (path: string) => (isAbsolute(path) ? path : resolve(projectRoot, path));

  const dirValue = value('dir');
  const dir = dirValue === undefined ? join(projectRoot, defaults.dirName) : fromRoot(dirValue);
  const dirLabel = sources.dir?.label ?? 'the state directory';
  if (existsSync(dir) && !statSync(dir).isDirectory()) {
    throw new K3sVmError('CONFIG_INVALID', `${dirLabel} ${dir} exists and is not a directory`, {
      hint: `point ${sources.dir?.label ?? 'K3S_VM_DIR (or --dir)'} at a directory; it is created if missing`,
    });
  }
  // The disk image and QMP socket paths end up in QEMU's comma-separated, word-split options.
  if (/[\s,]/.test(dir)) {
    throw new K3sVmError(
      'CONFIG_INVALID',
      `${dirLabel} ${JSON.stringify(dir)} contains a space or a comma, which QEMU's options cannot take`,
      {
        hint: `use a state directory (${sources.dir?.label ?? 'K3S_VM_DIR or --dir'}) whose path has no spaces or commas`,
      },
    );
  }

  const apiPort = value('apiPort');
  const sshPort = value('sshPort');
  if (apiPort !== undefined && apiPort === sshPort) {
    throw new K3sVmError('CONFIG_INVALID', `${sources.apiPort?.label} and ${sources.sshPort?.label} are both ${apiPort}`, {
      hint: 'give the API port and the SSH port different values, or leave one out to choose a free port',
    });
  }

  const nixValue = value('nix');
  const nix = nixValue === undefined ? packageNixDir : fromRoot(nixValue);
  if (sources.nix) {
    const target = existsSync(nix) && statSync(nix).isDirectory() ? join(nix, 'default.nix') : nix;
    if (!existsSync(target)) {
      throw new K3sVmError('CONFIG_INVALID', `${sources.nix.label}=${JSON.stringify(nixValue)} is not valid: ${target} does not exist`, {
        hint: `point ${sources.nix.label} at a .nix file or a directory with a default.nix, or leave it out to use the package's NixOS VM`,
      });
    }
  }

  const nixpkgsValue = value('nixpkgs') ?? defaults.nixpkgs;
  const nixpkgs = /^[./~]/.test(nixpkgsValue) ? fromRoot(nixpkgsValue.replace(/^~(?=\/)/, env['HOME'] || homedir())) : nixpkgsValue;
  if (nixpkgs.startsWith('/') && !existsSync(nixpkgs)) {
    throw new K3sVmError(
      'CONFIG_INVALID',
      `${sources.nixpkgs?.label}=${JSON.stringify(nixpkgsValue)} is not valid: ${nixpkgs} does not exist`,
      {
        hint: 'give a nixpkgs checkout, a channel name such as nixos-25.05, or <nixpkgs>',
      },
    );
  }

  const extraModules = (value('extraModules') ?? []).map((path) => {
    const absolute = fromRoot(path);
    if (!existsSync(absolute)) {
      throw new K3sVmError('CONFIG_INVALID', `option extraModules: ${absolute} does not exist`, {
        hint: 'give paths of NixOS module files, relative to the project root',
      });
    }
    return absolute;
  });

  // Combinations that can never become ready: refused now instead of at the readiness deadline.
  const offline = value('offline') ?? defaults.offline;
  const airgapImages = value('airgapImages') ?? defaults.airgapImages;
  const vm = value('kubeconfig') === undefined;
  if (vm && offline && !airgapImages) {
    const offlineLabel = sources.offline?.label ?? 'option offline';
    const airgapLabel = sources.airgapImages?.label ?? 'option airgapImages';
    throw new K3sVmError(
      'CONFIG_INVALID',
      `${offlineLabel} cuts the VM off from every registry, and ${airgapLabel} is false: K3s's own pods (CoreDNS, the storage provisioner, metrics-server) could never pull their images, so the cluster would never become ready`,
      { hint: `leave ${airgapLabel} at its default (true), or turn ${offlineLabel} off` },
    );
  }
  const extraK3sFlags = value('extraK3sFlags') ?? [];
  const disableAgent = extraK3sFlags.find((flag) => /^--disable-agent(?:=(?!false$).*)?$/.test(flag));
  if (vm && disableAgent !== undefined) {
    const label = sources.extraK3sFlags?.label ?? 'option extraK3sFlags';
    throw new K3sVmError(
      'CONFIG_INVALID',
      `${label} holds ${JSON.stringify(disableAgent)}: without its agent the K3s server registers no node, so "node Ready" would never pass and no pod could run`,
      { hint: `remove ${disableAgent} from ${label}` },
    );
  }

  const cacheHome = env['XDG_CACHE_HOME'] || join(env['HOME'] || homedir(), '.cache');

  const kubeconfigValue = value('kubeconfig');
  const kubeconfig = kubeconfigValue === undefined ? undefined : fromRoot(kubeconfigValue.replace(/^~(?=\/)/, env['HOME'] || homedir()));
  if (kubeconfig !== undefined) {
    if (!existsSync(kubeconfig) || !statSync(kubeconfig).isFile()) {
      throw new K3sVmError(
        'CONFIG_INVALID',
        `${sources.kubeconfig?.label}=${JSON.stringify(kubeconfigValue)} is not valid: ${kubeconfig} is not a file`,
        {
          hint: `point ${sources.kubeconfig?.label} at the kubeconfig of the cluster to use, or leave it out to boot a VM`,
        },
      );
    }
    // What only a VM has: a value for it means the user expects a VM, so say why it does nothing.
    const vmOnly = vmOnlyOptions.filter((key) => sources[key] !== undefined || value(key) !== undefined);
    if (vmOnly.length > 0) {
      const named = vmOnly.map((key) => sources[key]?.label ?? `option ${key}`).join(', ');
      throw new K3sVmError(
        'CONFIG_INVALID',
        `${named} ${vmOnly.length === 1 ? 'configures' : 'configure'} the VM, but ${sources.kubeconfig?.label} asks for an existing cluster, where there is no VM`,
        {
          hint: `leave out ${named}, or ${sources.kubeconfig?.label} to boot a VM`,
        },
      );
    }
  } else if (value('context') !== undefined && sources.context) {
    // value() records where the context came from: until it is read, sources has no entry.
    throw new K3sVmError(
      'CONFIG_INVALID',
      `${sources.context.label} names a context, but no kubeconfig is given (${nameOf('kubeconfig')})`,
      {
        hint: `give the existing cluster's kubeconfig (${settingLike('kubeconfig', sources.context, 'PATH')}), or leave the context out to boot a VM`,
      },
    );
  }

  const snapshot = value('snapshot') ?? false;
  const rewind = value('rewind') ?? 'off';
  if (rewind !== 'off' && !snapshot) {
    throw new K3sVmError(
      'CONFIG_INVALID',
      `${sources.rewind?.label}=${rewind} rewinds the VM to its snapshot, but snapshots are off (${sources.snapshot?.label ?? nameOf('snapshot')} is not on)`,
      { hint: `turn snapshots on too (${settingLike('snapshot', sources.rewind, true)}), or leave the rewind out` },
    );
  }

  return {
    projectRoot,
    dir,
    name: value('name') ?? defaults.name,
    cpus: value('cpus') ?? defaults.cpus,
    memoryMiB: value('memoryMiB') ?? defaults.memoryMiB,
    diskSizeMiB: value('diskSizeMiB') ?? defaults.diskSizeMiB,
    accel: value('accel') ?? defaults.accel,
    keep: value('keep') ?? defaults.keep,
    apiPort,
    sshPort,
    timeoutSeconds: value('timeoutSeconds'),
    nix,
    nixpkgs,
    k3sVersion: value('k3sVersion') ?? '',
    offline,
    snapshot,
    rewind,
    extraK3sFlags,
    disable: value('disable') ?? defaults.disable,
    airgapImages,
    extraModules,
    kernelParams: value('kernelParams') ?? [],
    debug: value('debug') ?? defaults.debug,
    kubeconfig,
    context: value('context'),
    allowContexts: value('allowContexts') ?? [],
    sweepAfterSeconds: value('sweepAfterSeconds') ?? defaults.sweepAfterSeconds,
    nixBuild: value('nixBuild') ?? defaults.nixBuild,
    images: (value('images') ?? []).map(fromRoot),
    manifests: (value('manifests') ?? []).map(fromRoot),
    waitForRollout: value('waitForRollout') ?? false,
    diagnostics: value('diagnostics') ?? true,
    keepFailedNamespaces: value('keepFailedNamespaces') ?? false,
    preloadImages: (value('preloadImages') ?? []).map(fromRoot),
    cacheDir: join(cacheHome, 'k3s-vm'),
    names: Object.fromEntries(
      (Object.keys(optionTable) as OptionKey[]).map((key) => [key, layersOf(key, options, env, flags)[0]?.label ?? nameOf(key)]),
    ) as Record<OptionKey, string>,
  };
}

/**
 * The setting of key with value, written the way the user gave another setting (`like`): as a
 * flag, an option in code or a variable, where key can be given that way.
 */
function settingLike(key: OptionKey, like: Layer | undefined, value: string | boolean): string {
  const flag = optionTable[key].flag;
  const name = like?.label.startsWith('--') && flag ? `--${flag}` : like?.label.startsWith('option ') ? `option ${key}` : nameOf(key);
  return setting({ [key]: name }, key, value);
}

/** How an option left to its default is named: by its variable, else as an option. */
function nameOf(key: OptionKey): string {
  return optionTable[key].variable ?? `option ${key}`;
}
