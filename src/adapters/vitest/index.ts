// k3s-vm/vitest: a Vitest global setup that provides the cluster, and test-side helpers.
import type { KubeConfig } from '@kubernetes/client-node';
import { inject, test as baseTest } from 'vitest';
import type { TestProject } from 'vitest/node';
import { clusterConfig, loadKubeConfig, type RewindResult, type StartOptions } from '../../cluster/index.js';
import { K3sVmError } from '../../errors.js';
import { closeSession, openSession, rewindProvided, type ProvidedCluster } from '../session.js';
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
  return async function setup(
    project: Pick<TestProject, 'provide'> & { readonly config?: { readonly maxWorkers?: number } },
  ): Promise<() => Promise<void>> {
    const maxWorkers = project.config?.maxWorkers ?? 1;
    if (clusterConfig(options).rewind === 'file' && maxWorkers > 1) {
      // Refused before the VM starts: a rewind before one file would undo what files running beside it do.
      throw new K3sVmError(
        'CONFIG_INVALID',
        `rewind 'file' (K3S_VM_REWIND) needs the test files to run one at a time, and Vitest runs up to ${maxWorkers} at once`,
        {
          hint: 'set fileParallelism: false in the test section of your vitest.config (or run vitest with --no-file-parallelism)',
        },
      );
    }
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

/**
 * Returns the VM to its snapshot (or to a named one) without a reboot: what tests created
 * since, namespaced or cluster-scoped, is gone. Refused (VM_IN_USE) while another run uses
 * the VM. With K3S_VM_REWIND=file, k3s-vm's `test` does this before each file by itself;
 * files that use Vitest's own `test` can call it in `beforeAll`.
 */
export function rewind(to?: string): Promise<RewindResult> {
  return rewindProvided(useK3sVm(), to);
}

export interface K3sVmFixtures {
  /** A client-node KubeConfig for the cluster. */
  kubeConfig: KubeConfig;
  /** A namespace of this test's own: created before it, deleted after it. */
  namespace: string;
}

interface K3sVmFileFixtures {
  /** With K3S_VM_REWIND=file: the file's rewind, done before its first test (set up automatically). */
  rewoundForFile: RewindResult | undefined;
}

function extendTest() {
  return baseTest.extend<K3sVmFixtures & K3sVmFileFixtures>({
    rewoundForFile: [
      // eslint-disable-next-line no-empty-pattern
      async ({}, use) => {
        const provided = useK3sVm();
        await use(provided.rewind === 'file' ? await rewindProvided(provided) : undefined);
      },
      { scope: 'file', auto: true },
    ],
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
