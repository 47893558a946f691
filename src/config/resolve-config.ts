// Resolves options > K3S_VM_* environment > defaults into a validated config. The only reader of process.env.
import { existsSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { K3sVmError } from '../errors.js';
import type { Accel, K3sVmOptions, ResolvedConfig } from './options.js';

/** The package's own Nix expression for the NixOS K3s VM. */
export const packageNixDir = fileURLToPath(new URL('../../nix/', import.meta.url));

export const defaults = {
  name: 'k3s-vm',
  cpus: 2,
  memoryMiB: 4096,
  diskSizeMiB: 20_480,
  accel: 'auto' as Accel,
  keep: false,
  debug: false,
  dirName: '.k3s-vm',
  nixBuild: 'nix-build',
} as const;

type Env = Readonly<Record<string, string | undefined>>;

/** Where a value came from, for error messages that name it. */
interface Source {
  readonly label: string;
  readonly raw: string;
}

function pick<K extends keyof K3sVmOptions>(
  options: K3sVmOptions,
  key: K,
  env: Env,
  variable: string,
): { value: K3sVmOptions[K] | string | undefined; source: Source | undefined } {
  if (options[key] !== undefined) {
    return { value: options[key], source: { label: `option ${key}`, raw: JSON.stringify(options[key]) } };
  }
  const fromEnv = env[variable];
  if (fromEnv !== undefined && fromEnv !== '') {
    return { value: fromEnv, source: { label: variable, raw: JSON.stringify(fromEnv) } };
  }
  return { value: undefined, source: undefined };
}

function invalid(source: Source, accepted: string): K3sVmError {
  return new K3sVmError('CONFIG_INVALID', `${source.label}=${source.raw} is not valid: expected ${accepted}`, {
    hint: `fix or unset ${source.label}`,
  });
}

function integer(
  value: unknown,
  source: Source | undefined,
  fallback: number | undefined,
  min: number,
  max: number,
  accepted: string,
): number | undefined {
  if (value === undefined || source === undefined) return fallback;
  const n = typeof value === 'number' ? value : /^\s*\d+\s*$/.test(String(value)) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) throw invalid(source, accepted);
  return n;
}

function boolean(value: unknown, source: Source | undefined, fallback: boolean): boolean {
  if (value === undefined || source === undefined) return fallback;
  if (typeof value === 'boolean') return value;
  const text = String(value).trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(text)) return true;
  if (['0', 'false', 'no', 'off'].includes(text)) return false;
  throw invalid(source, '1, true, yes, on, 0, false, no or off');
}

function stringList(value: unknown, source: Source | undefined): readonly string[] {
  if (value === undefined || source === undefined) return [];
  if (!Array.isArray(value) || value.some((item) => typeof item !== 'string' || /\s/.test(item))) {
    throw invalid(source, 'an array of strings without spaces');
  }
  return value as string[];
}

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
 * Resolves options, then `K3S_VM_*` variables, then defaults, and validates all of them
 * before anything is started. Throws a CONFIG_INVALID K3sVmError that names the option or
 * variable, the bad value and what is accepted.
 */
export function resolveConfig(
  options: K3sVmOptions = {},
  env: Env = process.env,
  cwd: string = process.cwd(),
): ResolvedConfig {
  const projectRoot = resolve(options.projectRoot ?? findProjectRoot(cwd));
  const fromRoot = (path: string) => (isAbsolute(path) ? path : resolve(projectRoot, path));

  const dirPick = pick(options, 'dir', env, 'K3S_VM_DIR');
  if (dirPick.source && (typeof dirPick.value !== 'string' || dirPick.value.includes('\0'))) {
    throw invalid(dirPick.source, 'a directory path');
  }
  const dir = dirPick.value === undefined ? join(projectRoot, defaults.dirName) : fromRoot(String(dirPick.value));
  if (existsSync(dir) && !statSync(dir).isDirectory()) {
    throw new K3sVmError('CONFIG_INVALID', `${dirPick.source?.label ?? 'the state directory'} ${dir} exists and is not a directory`, {
      hint: 'point K3S_VM_DIR at a directory (it is created if missing)',
    });
  }

  const namePick = pick(options, 'name', env, 'K3S_VM_NAME');
  const name = namePick.value === undefined ? defaults.name : String(namePick.value);
  if (namePick.source && !/^[a-z][a-z0-9-]{0,40}[a-z0-9]$/.test(name)) {
    throw invalid(namePick.source, 'a hostname: 2 to 42 lower-case letters, digits and dashes, starting with a letter');
  }

  const cpusPick = pick(options, 'cpus', env, 'K3S_VM_CPUS');
  const cpus = integer(cpusPick.value, cpusPick.source, defaults.cpus, 1, 256, 'a whole number of CPUs from 1 to 256')!;

  const memPick = pick(options, 'memoryMiB', env, 'K3S_VM_MEMORY');
  const memoryMiB = integer(memPick.value, memPick.source, defaults.memoryMiB, 256, 1_048_576, 'a whole number of MiB, at least 256 (for example 4096)')!;

  const diskPick = pick(options, 'diskSizeMiB', env, 'K3S_VM_DISK_SIZE');
  const diskSizeMiB = integer(diskPick.value, diskPick.source, defaults.diskSizeMiB, 64, 16_777_216, 'a whole number of MiB, at least 64 (for example 20480)')!;

  const accelPick = pick(options, 'accel', env, 'K3S_VM_ACCEL');
  const accelText = accelPick.value === undefined ? defaults.accel : String(accelPick.value).toLowerCase();
  if (accelPick.source && !['auto', 'kvm', 'tcg'].includes(accelText)) throw invalid(accelPick.source, 'auto, kvm or tcg');
  const accel = accelText as Accel;

  const keepPick = pick(options, 'keep', env, 'K3S_VM_KEEP');
  const keep = boolean(keepPick.value, keepPick.source, defaults.keep);
  const debugPick = pick(options, 'debug', env, 'K3S_VM_DEBUG');
  const debug = boolean(debugPick.value, debugPick.source, defaults.debug);

  const portAccepted = 'a TCP port from 1024 to 65535';
  const apiPick = pick(options, 'apiPort', env, 'K3S_VM_API_PORT');
  const apiPort = integer(apiPick.value, apiPick.source, undefined, 1024, 65_535, portAccepted);
  const sshPick = pick(options, 'sshPort', env, 'K3S_VM_SSH_PORT');
  const sshPort = integer(sshPick.value, sshPick.source, undefined, 1024, 65_535, portAccepted);
  if (apiPort !== undefined && apiPort === sshPort) {
    throw new K3sVmError('CONFIG_INVALID', `the API port and the SSH port are both ${apiPort}`, {
      hint: 'give K3S_VM_API_PORT and K3S_VM_SSH_PORT different values, or unset one to choose a free port',
    });
  }

  const timeoutPick = pick(options, 'timeoutSeconds', env, 'K3S_VM_TIMEOUT');
  const timeoutSeconds = integer(timeoutPick.value, timeoutPick.source, undefined, 1, 86_400, 'a whole number of seconds from 1 to 86400');

  const nixPick = pick(options, 'nix', env, 'K3S_VM_NIX');
  const nix = nixPick.value === undefined ? packageNixDir : fromRoot(String(nixPick.value));
  if (nixPick.source) {
    const target = existsSync(nix) && statSync(nix).isDirectory() ? join(nix, 'default.nix') : nix;
    if (!existsSync(target)) {
      throw new K3sVmError('CONFIG_INVALID', `${nixPick.source.label}=${nixPick.source.raw} is not valid: ${target} does not exist`, {
        hint: `point ${nixPick.source.label} at a .nix file or a directory with a default.nix, or unset it to use the package's NixOS VM`,
      });
    }
  }

  const k3sPick = pick(options, 'k3sVersion', env, 'K3S_VM_K3S');
  let k3sVersion = '';
  if (k3sPick.source) {
    const match = /^v?(\d+)[._](\d+)$/.exec(String(k3sPick.value).trim());
    if (!match) throw invalid(k3sPick.source, 'a K3s minor version such as 1.31 (or 1_31)');
    k3sVersion = `${match[1]}_${match[2]}`;
  }

  const extraK3sFlags = stringList(options.extraK3sFlags, options.extraK3sFlags && { label: 'option extraK3sFlags', raw: JSON.stringify(options.extraK3sFlags) });
  const disable = options.disable === undefined ? ['traefik'] : stringList(options.disable, { label: 'option disable', raw: JSON.stringify(options.disable) });
  const airgapImages = options.airgapImages ?? true;
  const extraModules = stringList(options.extraModules, options.extraModules && { label: 'option extraModules', raw: JSON.stringify(options.extraModules) }).map((path) => {
    const absolute = fromRoot(path);
    if (!existsSync(absolute)) {
      throw new K3sVmError('CONFIG_INVALID', `option extraModules: ${absolute} does not exist`, { hint: 'give paths of NixOS module files, relative to the project root' });
    }
    return absolute;
  });
  const kernelParams = stringList(options.kernelParams, options.kernelParams && { label: 'option kernelParams', raw: JSON.stringify(options.kernelParams) });

  const nixBuild = options.nixBuild ?? defaults.nixBuild;
  const cacheHome = env['XDG_CACHE_HOME'] || join(env['HOME'] || homedir(), '.cache');
  const cacheDir = join(cacheHome, 'k3s-vm');

  return {
    projectRoot,
    dir,
    name,
    cpus,
    memoryMiB,
    diskSizeMiB,
    accel,
    keep,
    apiPort,
    sshPort,
    timeoutSeconds,
    nix,
    k3sVersion,
    extraK3sFlags,
    disable,
    airgapImages,
    extraModules,
    kernelParams,
    debug,
    nixBuild,
    cacheDir,
  };
}

/** The variable through which a runner's global setup hands the cluster to its worker processes. */
export const handoffVariable = 'K3S_VM_PROVIDED';

/** Reads the cluster handed to this worker process (JSON), if any. */
export function readHandoff<T>(env: Env = process.env): T | undefined {
  const text = env[handoffVariable];
  if (!text) return undefined;
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new K3sVmError('CONFIG_INVALID', `${handoffVariable} does not hold the JSON that k3s-vm's global setup writes`, {
      hint: `unset ${handoffVariable}; k3s-vm's global setup sets it for the test workers`,
    });
  }
}
