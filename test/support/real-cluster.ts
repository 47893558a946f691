// The run's real-Kubernetes guest (test/real/setup.ts) as a test file sees it: its options, or
// why it is not there. Files describe their tests with `describeReal`, which skips them (the
// reason was printed by the setup) when the guest cannot run here.
import { describe, inject } from 'vitest';
import type { ProvidedCluster } from '../../src/adapters/vitest/index.js';
import { loadKubeConfig, type StartOptions } from '../../src/cluster/index.js';

export interface RealGuest {
  /** The options it was started with; attaching with the same options shares it. */
  readonly options: StartOptions & { dir: string };
  /** The progress lines of its boot. */
  readonly bootLog: readonly string[];
}

declare module 'vitest' {
  export interface ProvidedContext {
    /** The real-Kubernetes guest of this run, or why there is none. */
    realGuest: RealGuest | { unavailable: string };
  }
}

/** The real guest of this run, or undefined when it could not run here. */
export function realGuest(): (RealGuest & { provided: ProvidedCluster }) | undefined {
  const guest = inject('realGuest');
  if (!guest) throw new Error('no real guest: run these tests with vitest.real.config.ts');
  if ('unavailable' in guest) return undefined;
  return { ...guest, provided: inject('k3sVm') };
}

/** A client-node KubeConfig for the real guest (call inside a test or hook). */
export function realKubeConfig() {
  const guest = realGuest();
  if (!guest) throw new Error('the real guest is not running');
  return loadKubeConfig(guest.provided.kubeconfig);
}

/** `describe` that runs only where the real guest runs. */
export const describeReal: typeof describe = (() => {
  const guest = inject('realGuest');
  return guest && 'unavailable' in guest ? describe.skip : describe;
})() as typeof describe;
