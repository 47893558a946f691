// A namespace of a test's own, shared by the Vitest fixture and the Jest helper.
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';

/** A namespace for one test; delete it when the test is done. */
export interface TestNamespace {
  readonly name: string;
  delete(): Promise<void>;
}

/** A namespace name from a label such as a test's name: DNS-1123, at most 63 characters, unique. */
export function testNamespaceName(label: string): string {
  const slug = label.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 40).replace(/-+$/, '');
  return `t-${slug || 'test'}-${Math.random().toString(36).slice(2, 8)}`;
}

/** Creates a uniquely named namespace (labelled as managed by k3s-vm) for one test. */
export async function createNamespaceFor(label: string, kubeConfig: KubeConfig): Promise<TestNamespace> {
  const api = kubeConfig.makeApiClient(CoreV1Api);
  const name = testNamespaceName(label);
  await api.createNamespace({ body: { metadata: { name, labels: { 'app.kubernetes.io/managed-by': 'k3s-vm' } } } });
  return {
    name,
    delete: async () => {
      await api.deleteNamespace({ name }).catch(() => undefined);
    },
  };
}
