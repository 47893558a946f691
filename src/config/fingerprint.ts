// Stable fingerprints of what determines the VM image and the running VM, for rebuild and reuse decisions.
import { createHash } from 'node:crypto';
import type { ResolvedConfig } from './options.js';

/** The config fields the Nix expression receives as arguments. */
export const buildFields = [
  'name',
  'cpus',
  'memoryMiB',
  'diskSizeMiB',
  'nixpkgs',
  'k3sVersion',
  'offline',
  'extraK3sFlags',
  'disable',
  'airgapImages',
  'extraModules',
] as const;

/**
 * The parameters the Nix expression receives: a change to any of them means a new build.
 * Nothing of one instance is among them (its SSH key reaches the VM at boot), so every state
 * directory with the same options shares one build.
 */
export type BuildParameters = Pick<ResolvedConfig, (typeof buildFields)[number]> & {
  /** Image archives built into the VM; absent when there are none (so earlier builds keep their inputs hash). */
  readonly preloadImages?: readonly string[];
};

export function buildParameters(config: ResolvedConfig): BuildParameters {
  const picked = Object.fromEntries(buildFields.map((field) => [field, config[field]])) as Pick<
    ResolvedConfig,
    (typeof buildFields)[number]
  >;
  return {
    ...picked,
    ...(config.preloadImages.length > 0 ? { preloadImages: config.preloadImages } : {}),
  };
}

/**
 * What a running VM must match to be reused, as flat comparable fields. Fixed ports count;
 * ports chosen at start do not (any free port is as good as another).
 */
export function runtimeFingerprint(config: ResolvedConfig): Readonly<Record<string, string>> {
  return {
    nix: config.nix,
    name: config.name,
    cpus: String(config.cpus),
    memoryMiB: String(config.memoryMiB),
    diskSizeMiB: String(config.diskSizeMiB),
    nixpkgs: config.nixpkgs || '(pinned)',
    k3sVersion: config.k3sVersion || '(default)',
    offline: String(config.offline),
    extraK3sFlags: config.extraK3sFlags.join(' ') || '(none)',
    disable: config.disable.join(',') || '(none)',
    airgapImages: String(config.airgapImages),
    extraModules: config.extraModules.join(' ') || '(none)',
    kernelParams: config.kernelParams.join(' ') || '(none)',
    accel: config.accel,
    apiPort: config.apiPort === undefined ? '(any)' : String(config.apiPort),
    sshPort: config.sshPort === undefined ? '(any)' : String(config.sshPort),
    // Only when set, so that VMs started before the option existed still match.
    ...(config.preloadImages.length > 0 ? { preloadImages: config.preloadImages.join(' ') } : {}),
  };
}

/** The fields whose values differ, as "field: old → new" lines (empty when they match). */
export function fingerprintDifferences(running: Readonly<Record<string, string>>, wanted: Readonly<Record<string, string>>): string[] {
  const keys = new Set([...Object.keys(running), ...Object.keys(wanted)]);
  const lines: string[] = [];
  for (const key of [...keys].sort()) {
    const before = running[key];
    const after = wanted[key];
    if (key === 'apiPort' || key === 'sshPort') {
      // A VM on a chosen port satisfies "(any)"; only a fixed port that differs is a change.
      if (after === '(any)' || before === after) continue;
    } else if (before === after) continue;
    lines.push(`${key}: ${before ?? '(unset)'} → ${after ?? '(unset)'}`);
  }
  return lines;
}

/** A short, stable hash of a JSON-serialisable value (object keys sorted). */
export function hashOf(value: unknown): string {
  return createHash('sha256').update(stableJson(value)).digest('hex').slice(0, 32);
}

function stableJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stableJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}
