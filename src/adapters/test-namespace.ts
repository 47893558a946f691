// A namespace of a test's own, shared by the Vitest fixture and the Jest helper.
import { setTimeout as sleep } from 'node:timers/promises';
import type { KubeConfig } from '@kubernetes/client-node';
import { clientNode, runLabels } from '../cluster/index.js';
import { K3sVmError } from '../errors.js';

/** A namespace for one test; delete it when the test is done. */
export interface TestNamespace {
  readonly name: string;
  delete(): Promise<void>;
}

/** How long a new namespace may take to get its `default` ServiceAccount (seconds under emulation). */
const serviceAccountTimeoutMs = 60_000;

/** A namespace name from a label such as a test's name: DNS-1123, at most 63 characters, unique. */
export function testNamespaceName(label: string): string {
  const slug = label
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 40)
    .replace(/-+$/, '');
  return `t-${slug || 'test'}-${Math.random().toString(36).slice(2, 8)}`;
}

/**
 * Creates a uniquely named namespace for one test, labelled as k3s-vm's and as the run's (so
 * the run's teardown, or a later sweep, finds it), and waits for its `default`
 * ServiceAccount: until the controller has made it, pods are refused.
 */
export async function createNamespaceFor(label: string, kubeConfig: KubeConfig, runId: string): Promise<TestNamespace> {
  const api = kubeConfig.makeApiClient(clientNode().CoreV1Api);
  const name = testNamespaceName(label);
  await api.createNamespace({ body: { metadata: { name, labels: runLabels(runId) } } });
  const namespace: TestNamespace = {
    name,
    delete: async () => {
      await api.deleteNamespace({ name }).catch(() => undefined);
    },
  };
  const deadline = Date.now() + serviceAccountTimeoutMs;
  for (let delayMs = 20; ; delayMs = Math.min(delayMs * 2, 250)) {
    try {
      await api.readNamespacedServiceAccount({ name: 'default', namespace: name });
      return namespace;
    } catch (error) {
      if ((error as { code?: number }).code !== 404 || Date.now() > deadline) {
        await namespace.delete();
        throw new K3sVmError('NOT_READY', `namespace ${name} did not get its default ServiceAccount: ${(error as Error).message}`, {
          cause: error,
          hint: 'the controller manager may be overloaded: `k3s-vm kubectl get events -A` shows what it does',
        });
      }
    }
    await sleep(delayMs);
  }
}
