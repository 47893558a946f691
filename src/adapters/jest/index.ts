// k3s-vm/jest: test-side helpers for Jest; the cluster arrives from k3s-vm/jest/setup through the environment.
import { KubeConfig } from '@kubernetes/client-node';
import { readHandoff } from '../../config/resolve-config.js';
import type { ProvidedCluster } from '../session.js';
import { createNamespaceFor, type TestNamespace } from '../test-namespace.js';

export type { ProvidedCluster } from '../session.js';
export type { TestNamespace } from '../test-namespace.js';

/** The cluster the global setup provided; throws a clear error if it is not configured. */
export function useK3sVm(): ProvidedCluster {
  const provided = readHandoff<ProvidedCluster>();
  if (!provided) {
    throw new Error(
      "k3s-vm: no cluster was provided. Add globalSetup: 'k3s-vm/jest/setup' and globalTeardown: 'k3s-vm/jest/teardown' to your Jest config",
    );
  }
  return provided;
}

/** A loaded client-node KubeConfig for the test cluster. */
export function useKubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromString(useK3sVm().kubeconfig);
  return kc;
}

/** Creates a uniquely named namespace from a label such as the test's name: create it in beforeEach, delete it in afterEach. */
export function createTestNamespace(label = 'test', kubeConfig: KubeConfig = useKubeConfig()): Promise<TestNamespace> {
  return createNamespaceFor(label, kubeConfig);
}
