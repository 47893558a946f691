// k3s-vm/jest: test-side helpers for Jest; the cluster arrives from k3s-vm/jest/setup through the environment.
import type { KubeConfig } from '@kubernetes/client-node';
import { loadKubeConfig, type PortForwardHandle, type RewindResult } from '../../cluster/index.js';
import { K3sVmError } from '../../errors.js';
import { rewindProvided, type ProvidedCluster } from '../session.js';
import { readHandoff } from './handoff.js';
import { bindHelpers, type BoundHelpers } from '../bound-helpers.js';
import { createNamespaceFor, markKept, type TestNamespace } from '../test-namespace.js';
import { jestRegistry } from './failures.js';

export * from '../helper-exports.js';

/** A test's namespace with the helpers bound to it; `delete()` also closes its port-forwards. */
export interface JestTestNamespace extends TestNamespace, BoundHelpers {}

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

/**
 * Creates a uniquely named namespace from a label such as the test's name: create it in
 * beforeEach, delete it in afterEach. It carries the helpers (`exec`, `logs`, `portForward`,
 * `waitFor`) bound to it. Under `testEnvironment: 'k3s-vm/jest/environment'`, a failed test's
 * namespace diagnostics are printed with its failure, and `delete()` keeps the namespace when
 * keepFailedNamespaces is set.
 */
export async function createTestNamespace(label = 'test', kubeConfig: KubeConfig = useKubeConfig()): Promise<JestTestNamespace> {
  const provided = useK3sVm();
  const namespace = await createNamespaceFor(label, kubeConfig, provided.runId);
  const onFailure = provided.onFailure ?? { diagnostics: true, keepNamespace: false };
  const registered = { name: namespace.name, kubeconfig: provided.kubeconfig, onFailure };
  jestRegistry()?.namespaces.push(registered);
  const forwards = new Set<PortForwardHandle>();
  const helpers = bindHelpers(kubeConfig, namespace.name, { track: (forward) => forwards.add(forward) });
  return {
    ...helpers,
    name: namespace.name,
    delete: async () => {
      await Promise.all([...forwards].map((forward) => forward.close()));
      if (jestRegistry()?.failed && onFailure.keepNamespace) await markKept(kubeConfig, namespace.name);
      else await namespace.delete();
    },
  };
}

/**
 * Returns the VM to its snapshot (or to a named one) without a reboot: what tests created
 * since, namespaced or cluster-scoped, is gone. Call it in `beforeAll` to start a file from
 * the snapshot, with the files run one at a time (`--runInBand`: a rewind undoes what files
 * beside it do). Refused (VM_IN_USE) while another run uses the VM.
 */
export function rewind(to?: string): Promise<RewindResult> {
  return rewindProvided(useK3sVm(), to);
}
