// k3s-vm/jest/environment: Jest's node environment that attaches a failed test's namespace diagnostics to its failure.
import { TestEnvironment } from 'jest-environment-node';
import { loadKubeConfig } from '../../cluster/index.js';
import { failureReport, endNamespaceFailure, jestRegistryKey, type JestRegistry } from './failures.js';

interface CircusEvent {
  readonly name: string;
  readonly test?: { errors: unknown[] };
}

/**
 * `testEnvironment: 'k3s-vm/jest/environment'`: Node's environment, plus, when a test fails,
 * the diagnostics of the namespaces it made with createTestNamespace (collected before its
 * afterEach deletes them) added to the test's errors, so Jest prints them with the failure.
 */
export default class K3sVmEnvironment extends TestEnvironment {
  private registry(): JestRegistry {
    const global = this.global as unknown as Record<symbol, JestRegistry | undefined>;
    return (global[jestRegistryKey] ??= { namespaces: [], failed: false });
  }

  async handleTestEvent(event: CircusEvent): Promise<void> {
    const registry = this.registry();
    if (event.name === 'test_start') {
      registry.namespaces = [];
      registry.failed = false;
    }
    if (event.name !== 'test_fn_failure' || !event.test) return;
    registry.failed = true;
    for (const namespace of registry.namespaces) {
      if (!namespace.onFailure.diagnostics && !namespace.onFailure.keepNamespace) continue;
      const end = await endNamespaceFailure(loadKubeConfig(namespace.kubeconfig), namespace);
      const text = failureReport(namespace.name, end);
      if (!text) continue;
      const error = new Error(text.trimEnd());
      error.name = 'k3s-vm';
      error.stack = text.trimEnd();
      event.test.errors.push(error);
    }
  }
}
