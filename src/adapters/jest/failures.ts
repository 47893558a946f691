// What a Jest test's namespaces and the k3s-vm/jest/environment share through the test's global object.
import type { KubeConfig } from '@kubernetes/client-node';
import { collectDiagnostics } from '../../cluster/index.js';
import { diagnosticsBudgetMs, type NamespaceEnd, type OnFailure } from '../test-namespace.js';

export { failureReport } from '../test-namespace.js';

/** A namespace made during the current test, as the environment needs it. */
export interface RegisteredNamespace {
  readonly name: string;
  readonly kubeconfig: string;
  readonly onFailure: OnFailure;
  /** Set by the environment once the diagnostics are collected (the namespace's delete then keeps it if asked). */
  diagnosed?: boolean;
}

export interface JestRegistry {
  namespaces: RegisteredNamespace[];
  /** The current test failed (its function threw). */
  failed: boolean;
}

/** The key on the test's global object (Symbol.for: the test's realm and the environment's see the same symbol). */
export const jestRegistryKey = Symbol.for('k3s-vm.jest.registry');

/** The registry of the test's global, when the test runs in k3s-vm/jest/environment. */
export function jestRegistry(): JestRegistry | undefined {
  return (globalThis as Record<symbol, JestRegistry | undefined>)[jestRegistryKey];
}

/** Collects a failed test's namespace diagnostics (if asked); the namespace's delete decides about keeping it. */
export async function endNamespaceFailure(kubeConfig: KubeConfig, namespace: RegisteredNamespace): Promise<NamespaceEnd> {
  const diagnostics = namespace.onFailure.diagnostics
    ? await collectDiagnostics(kubeConfig, namespace.name, { budgetMs: diagnosticsBudgetMs })
    : undefined;
  namespace.diagnosed = true;
  return { diagnostics, kept: namespace.onFailure.keepNamespace };
}
