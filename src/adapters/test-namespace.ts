// A namespace of a test's own, shared by the Vitest fixture and the Jest helper.
import type { KubeConfig } from '@kubernetes/client-node';
import { clientNode, collectDiagnostics, exists, keptAnnotation, runLabels, waitFor, type Diagnostics } from '../cluster/index.js';
import { K3sVmError } from '../errors.js';

/** A namespace for one test; delete it when the test is done. */
export interface TestNamespace {
  readonly name: string;
  delete(): Promise<void>;
}

/** What the namespace fixtures do when a test fails (from the diagnostics and keepFailedNamespaces options). */
export interface OnFailure {
  /** Collect the namespace's diagnostics. */
  readonly diagnostics: boolean;
  /** Keep the namespace instead of deleting it. */
  readonly keepNamespace: boolean;
}

/** How long the diagnostics of a failed test may take (the bound is 2 s, this leaves room for the report). */
export const diagnosticsBudgetMs = 1_500;

/** What became of a test's namespace at its end. */
export interface NamespaceEnd {
  /** The diagnostics, when the test failed and they were asked for. */
  readonly diagnostics: Diagnostics | undefined;
  /** The namespace was kept (the test failed and keepNamespace was set). */
  readonly kept: boolean;
}

/**
 * Ends a test's namespace: when the test failed, first collects its diagnostics (if asked),
 * then deletes it, or keeps it when asked to keep a failed test's namespace.
 */
export async function endNamespace(
  namespace: TestNamespace,
  kubeConfig: KubeConfig,
  failed: boolean,
  onFailure: OnFailure,
): Promise<NamespaceEnd> {
  const diagnostics =
    failed && onFailure.diagnostics ? await collectDiagnostics(kubeConfig, namespace.name, { budgetMs: diagnosticsBudgetMs }) : undefined;
  const kept = failed && onFailure.keepNamespace;
  if (kept) await markKept(kubeConfig, namespace.name);
  else await namespace.delete();
  return { diagnostics, kept };
}

/** Marks a namespace as kept, so the run's teardown on an existing cluster leaves it. */
export async function markKept(kubeConfig: KubeConfig, name: string): Promise<void> {
  const api = kubeConfig.makeApiClient(clientNode().CoreV1Api);
  const found = await api.readNamespace({ name });
  const annotations = { ...found.metadata?.annotations, [keptAnnotation]: new Date().toISOString() };
  await api.patchNamespace({ name, body: [{ op: 'add', path: '/metadata/annotations', value: annotations }] }).catch(() => undefined);
}

/** The lines printed with a failed test: where its namespace is, if kept, and its diagnostics. */
export function failureReport(namespace: string, end: NamespaceEnd): string {
  const kept = end.kept
    ? `k3s-vm kept the failed test's namespace ${namespace}: \`k3s-vm kubectl -n ${namespace} get all,events\`; delete it with \`k3s-vm kubectl delete namespace ${namespace}\`\n`
    : '';
  return `${kept}${end.diagnostics?.text ?? ''}`;
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
  // Watched, as every wait on the cluster is (kube/wait-for.ts): noticed as soon as the API server knows.
  try {
    await waitFor(kubeConfig, { kind: 'ServiceAccount', name: 'default', namespace: name }, exists, {
      timeoutMs: serviceAccountTimeoutMs,
    });
  } catch (error) {
    await namespace.delete();
    throw new K3sVmError('NOT_READY', `namespace ${name} did not get its default ServiceAccount: ${(error as Error).message}`, {
      cause: error,
      hint: 'the controller manager may be overloaded: `k3s-vm kubectl get events -A` shows what it does',
    });
  }
  return namespace;
}
