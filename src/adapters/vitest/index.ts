// k3s-vm/vitest: a Vitest global setup that provides the cluster, and test-side helpers.
import type { KubeConfig } from '@kubernetes/client-node';
import { inject, test as baseTest } from 'vitest';
import type { TestProject } from 'vitest/node';
import { loadKubeConfig, type StartOptions } from '../../cluster/index.js';
import { K3sVmError } from '../../errors.js';
import { closeSession, openSession, type ProvidedCluster } from '../session.js';
import { createNamespaceFor } from '../test-namespace.js';

export type { ProvidedCluster } from '../session.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The cluster from k3s-vm's global setup. */
    k3sVm: ProvidedCluster;
  }
}

/**
 * A global setup with options from code:
 * `globalSetup: ['./k3s.setup.ts']` with `export default createGlobalSetup({ memoryMiB: 2048 })`.
 */
export function createGlobalSetup(options: StartOptions = {}) {
  return async function setup(project: Pick<TestProject, 'provide'>): Promise<() => Promise<void>> {
    const session = await openSession(options);
    project.provide('k3sVm', session.provided);
    return closeSession;
  };
}

/** The default global setup: `globalSetup: ['k3s-vm/vitest']`, configured by K3S_VM_* variables. */
const setup = createGlobalSetup();
export default setup;

/** The cluster the global setup provided; throws a clear error if it is not configured. */
export function useK3sVm(): ProvidedCluster {
  const provided = inject('k3sVm');
  if (!provided) {
    throw new K3sVmError('NOT_RUNNING', 'k3s-vm: no cluster was provided to this test', {
      hint: "add globalSetup: ['k3s-vm/vitest'] to the test section of your vitest.config",
    });
  }
  return provided;
}

/** A loaded client-node KubeConfig for the test cluster. */
export function useKubeConfig(): KubeConfig {
  return loadKubeConfig(useK3sVm().kubeconfig);
}

export interface K3sVmFixtures {
  /** A client-node KubeConfig for the cluster. */
  kubeConfig: KubeConfig;
  /** A namespace of this test's own: created before it, deleted after it. */
  namespace: string;
}

function extendTest() {
  return baseTest.extend<K3sVmFixtures>({
    // eslint-disable-next-line no-empty-pattern
    kubeConfig: async ({}, use) => {
      await use(useKubeConfig());
    },
    namespace: async ({ kubeConfig, task }, use) => {
      const namespace = await createNamespaceFor(task.name, kubeConfig, useK3sVm().runId);
      try {
        await use(namespace.name);
      } finally {
        await namespace.delete();
      }
    },
  });
}

/**
 * `test` with the cluster fixtures: `test('…', async ({ kubeConfig, namespace }) => …)`.
 * This module is also the global setup, which Vitest loads where there is no suite to
 * extend; there the plain `test` stands in (no test is ever declared in that context).
 */
export const test: ReturnType<typeof extendTest> = (() => {
  try {
    return extendTest();
  } catch {
    return baseTest as unknown as ReturnType<typeof extendTest>;
  }
})();

export const it = test;
