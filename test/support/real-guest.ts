// The real-Kubernetes test guest (fixtures/test-guest/real-kubernetes.nix): where its build is,
// whether it can run here, and the options that boot it. Tests on it are in test/real/.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { StartOptions } from '../../src/cluster/index.js';
import { repoRoot, testGuestOptions } from './test-guest.js';

export const realGuestNix = join(repoRoot, 'fixtures', 'test-guest', 'real-kubernetes.nix');

/** The Kubernetes release the real guest runs: the one fixtures/test-guest/real-kubernetes/go.mod pins. */
export function kubernetesVersion(): string {
  const goMod = readFileSync(join(repoRoot, 'fixtures', 'test-guest', 'real-kubernetes', 'go.mod'), 'utf8');
  const version = /^\s*k8s\.io\/kubernetes (v[0-9.]+)$/m.exec(goMod)?.[1];
  if (!version) throw new Error('fixtures/test-guest/real-kubernetes/go.mod pins no k8s.io/kubernetes version');
  return version;
}

/** Where scripts/build-kubernetes.sh puts that release (the folder real-kubernetes.nix reads by default). */
export function kubernetesBuildDir(): string {
  return join('/var/cache/k3s-vm/kubernetes', kubernetesVersion());
}

/** Why the real guest cannot run on this host, or undefined when it can. */
export function realGuestUnavailable(): string | undefined {
  const dir = kubernetesBuildDir();
  if (!existsSync(join(dir, 'stamp')))
    return `Kubernetes ${kubernetesVersion()} is not built in ${dir} (scripts/build-kubernetes.sh builds it; it needs Go and the Go module registry)`;
  for (const file of ['/usr/bin/containerd', '/usr/sbin/runc', '/usr/lib/cni/bridge'])
    if (!existsSync(file)) return `${file} is missing (scripts/setup-host.sh installs containerd, runc and containernetworking-plugins)`;
  return undefined;
}

/** The state directory of the real-Kubernetes suite's shared guest (test/real/setup.ts): kept between runs. */
export const realGuestStateDir = '/var/tmp/k3s-vm-real-guest';

/**
 * The suite's shared guest: in its kept state directory with snapshots on. test/real/setup.ts
 * starts it for a run; scripts/prepare-real-guest.ts at install, to save the snapshot the run restores.
 */
export function suiteRealGuestOptions(): StartOptions & { dir: string } {
  return realGuestOptions('real', { dir: realGuestStateDir, snapshot: true });
}

/** Options that boot the real guest in a fresh state directory. */
export function realGuestOptions(label: string, extra: Partial<StartOptions> = {}): StartOptions & { dir: string } {
  return testGuestOptions(label, {
    nix: realGuestNix,
    name: 'real-guest',
    // etcd, the control plane, the kubelet and containerd, under emulation: two CPUs (the suite
    // runs one file at a time on it, and nothing beside it).
    cpus: 2,
    memoryMiB: 3072,
    diskSizeMiB: 8192,
    // No metrics-server in this guest: readiness must not wait for its APIService.
    disable: ['metrics-server'],
    // A cold start of the control plane under emulation takes minutes on a loaded host.
    timeoutSeconds: 480,
    ...extra,
  });
}
