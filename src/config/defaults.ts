// Every default value of the fixture, in one place.
import type { Accel } from './options.js';

export const defaults = {
  name: 'k3s-vm',
  cpus: 2,
  memoryMiB: 4096,
  diskSizeMiB: 20_480,
  accel: 'auto' as Accel,
  keep: false,
  debug: false,
  offline: false,
  /** The state directory's name inside the project root. */
  dirName: '.k3s-vm',
  nixBuild: 'nix-build',
  /** '' means the nixpkgs revision the package pins (nix/nixpkgs.json). */
  nixpkgs: '',
  disable: ['traefik'] as readonly string[],
  airgapImages: true,
  /** Deadline for boot and readiness under KVM. */
  timeoutSeconds: 300,
  /** How long after its last heartbeat a run on an existing cluster counts as dead. */
  sweepAfterSeconds: 600,
} as const;

/** Readiness deadline for an existing cluster: it is up already, or it will not be soon. */
export const existingClusterTimeoutSeconds = 60;

/** Emulation is an order of magnitude slower than KVM; K3s under TCG needs minutes, so deadlines are scaled. */
export const emulationTimeoutFactor = 3;

/** The boot-and-readiness deadline: the configured one, else the default scaled for emulation. */
export function timeoutMsFor(timeoutSeconds: number | undefined, accel: 'kvm' | 'tcg'): number {
  if (timeoutSeconds !== undefined) return timeoutSeconds * 1000;
  return defaults.timeoutSeconds * 1000 * (accel === 'tcg' ? emulationTimeoutFactor : 1);
}
