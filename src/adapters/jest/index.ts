// k3s-vm/jest: test-side helpers for Jest; the cluster arrives from k3s-vm/jest/setup through the environment.
import type { KubeConfig } from '@kubernetes/client-node';
import { loadKubeConfig } from '../../cluster/index.js';
import { K3sVmError } from '../../errors.js';
import type { ProvidedCluster } from '../session.js';
import { readHandoff } from './handoff.js';
import { createNamespaceFor, type TestNamespace } from '../test-namespace.js';

export type { ProvidedCluster } from '../session.js';
export type { TestNamespace } from '../test-namespace.js';

/** The cluster the global setup provided; throws a clear error if it is not configured. */
export function useK3sVm(): ProvidedCluster {
  const provided = readHandoff();
  if (!provided) {
    throw new K3sVmError('NOT_RUNNING', 'k3s-vm: no cluster was provided to this test', {
      hint: "add globalSetup: 'k3s-vm/jest/setup' and globalTeardown: 'k3s-vm/jest/teardown' to your Jest config",
    });
  }
  return provided;
}

/** A loaded client-node KubeConfig for the test cluster. */
export function useKubeConfig(): KubeConfig {
  return loadKubeConfig(useK3sVm().kubeconfig);
}

/** Creates a uniquely named namespace from a label such as the test's name: create it in beforeEach, delete it in afterEach. */
export function createTestNamespace(label = 'test', kubeConfig: KubeConfig = useKubeConfig()): Promise<TestNamespace> {
  return createNamespaceFor(label, kubeConfig, useK3sVm().runId);
}
