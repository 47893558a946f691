// k3s-vm/jest: test-side helpers for Jest; the cluster arrives from k3s-vm/jest/setup through the environment.
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { readHandoff } from '../../config/resolve-config.js';
import type { ProvidedCluster } from '../session.js';

export type { ProvidedCluster } from '../session.js';

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

/** A namespace for one test: create it in beforeEach, delete it in afterEach. */
export interface TestNamespace {
  readonly name: string;
  delete(): Promise<void>;
}

/** Creates a uniquely named namespace (DNS-1123) derived from a label such as the test's name. */
export async function createTestNamespace(label = 'test', kubeConfig: KubeConfig = useKubeConfig()): Promise<TestNamespace> {
  const api = kubeConfig.makeApiClient(CoreV1Api);
  const slug = label.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 40).replace(/-+$/, '');
  const name = `t-${slug || 'test'}-${Math.random().toString(36).slice(2, 8)}`;
  await api.createNamespace({ body: { metadata: { name, labels: { 'app.kubernetes.io/managed-by': 'k3s-vm' } } } });
  return {
    name,
    delete: async () => {
      await api.deleteNamespace({ name }).catch(() => undefined);
    },
  };
}
