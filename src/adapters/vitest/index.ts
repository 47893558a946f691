// k3s-vm/vitest: a Vitest global setup that provides the cluster, and test-side helpers.
import type { KubeConfig } from '@kubernetes/client-node';
import { inject, recordArtifact, test as baseTest, type TestArtifactBase } from 'vitest';
import type { TestProject } from 'vitest/node';
import {
  clusterConfig,
  collectDiagnostics,
  loadKubeConfig,
  type PortForwardHandle,
  type RewindResult,
  type StartOptions,
} from '../../cluster/index.js';
import { bindHelpers, type BoundHelpers } from '../bound-helpers.js';
import { K3sVmError } from '../../errors.js';
import { closeSession, openSession, rewindProvided, type ProvidedCluster } from '../session.js';
import {
  createNamespaceFor,
  diagnosticsBudgetMs,
  endNamespace,
  failureReport,
  markKept,
  type NamespaceEnd,
  type TestNamespace,
} from '../test-namespace.js';

export * from '../helper-exports.js';

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
    const config = clusterConfig(options);
    if (config.rewind === 'file' && maxWorkers > 1) {
      // Refused before the VM starts: a rewind before one file would undo what files running beside it do.
      throw new K3sVmError(
        'CONFIG_INVALID',
        `rewind 'file' (${config.names.rewind}) needs the test files to run one at a time, and Vitest runs up to ${maxWorkers} at once`,
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

export interface K3sVmFixtures extends BoundHelpers {
  /** A client-node KubeConfig for the cluster. */
  kubeConfig: KubeConfig;
  /**
   * A namespace of this test's own (or of the file's or the worker's, see createTest): created
   * before it and deleted after it; when a test fails, its diagnostics are attached first.
   */
  namespace: string;
}

/** The artifact a failed test's report carries: its namespace's events, pod states and log tails. */
export interface K3sVmDiagnosticsArtifact extends TestArtifactBase {
  readonly type: 'k3s-vm:diagnostics';
  readonly namespace: string;
  /** One line: how many pods, events and logs, and the time it took. */
  readonly summary: string;
  /** The whole text (also in the attachment). */
  readonly text: string;
}

declare module 'vitest' {
  interface TestArtifactRegistry {
    'k3s-vm:diagnostics': K3sVmDiagnosticsArtifact;
  }
}

interface K3sVmFileFixtures {
  /** With K3S_VM_REWIND=file: the file's rewind, done before its first test (set up automatically). */
  rewoundForFile: RewindResult | undefined;
}

export interface CreateTestOptions {
  /**
   * The scope of the `namespace` fixture: one per test, per file, or per worker (Vitest's
   * fixture `scope`). A file's or worker's namespace is deleted after its last test; the
   * diagnostics of any failed test in it are collected when that test fails. @default 'test'
   */
  readonly namespaceScope?: 'test' | 'file' | 'worker';
  /** Collect diagnostics when a test fails. @default the `diagnostics` option (K3S_VM_DIAGNOSTICS), on */
  readonly diagnostics?: boolean;
  /** Keep a failed test's namespace (its name is printed). @default the `keepFailedNamespaces` option (K3S_VM_KEEP_FAILED_NAMESPACES), off */
  readonly keepFailedNamespaces?: boolean;
}

type TaskLike = Parameters<typeof recordArtifact>[0];

/**
 * After a failed test: records the diagnostics as a test artifact (for reporters that read
 * artifacts), then makes them an error of the test, which every reporter prints with the
 * failure. (Vitest takes annotations only while a test runs, not once it has failed.)
 */
async function reportFailure(task: TaskLike, namespace: string, end: NamespaceEnd): Promise<void> {
  const text = failureReport(namespace, end);
  if (!text) return;
  if (end.diagnostics) {
    const artifact: K3sVmDiagnosticsArtifact = {
      type: 'k3s-vm:diagnostics',
      namespace,
      summary: end.diagnostics.summary,
      text: end.diagnostics.text,
      attachments: [{ contentType: 'text/plain', body: end.diagnostics.text, bodyEncoding: 'utf-8' }],
    };
    await recordArtifact(task, artifact).catch(() => undefined);
  }
  const error = new K3sVmError('TEST_DIAGNOSTICS', text.trimEnd());
  // The message is the report: no stack of k3s-vm's own frames under it.
  error.stack = `${error.name}: ${error.message}`;
  throw error;
}

function onFailureOf(options: CreateTestOptions) {
  const provided = useK3sVm().onFailure ?? { diagnostics: true, keepNamespace: false };
  return {
    diagnostics: options.diagnostics ?? provided.diagnostics,
    keepNamespace: options.keepFailedNamespaces ?? provided.keepNamespace,
  };
}

const failed = (task: { result?: { state?: string } }) => task.result?.state === 'fail';

function helperFixtures() {
  return {
    exec: async ({ kubeConfig, namespace, signal }: HelperContext, use: (value: BoundHelpers['exec']) => Promise<void>) =>
      use(bindHelpers(kubeConfig, namespace, { signal }).exec),
    logs: async ({ kubeConfig, namespace }: HelperContext, use: (value: BoundHelpers['logs']) => Promise<void>) =>
      use(bindHelpers(kubeConfig, namespace).logs),
    waitFor: async ({ kubeConfig, namespace, signal }: HelperContext, use: (value: BoundHelpers['waitFor']) => Promise<void>) =>
      use(bindHelpers(kubeConfig, namespace, { signal }).waitFor),
    portForward: async ({ kubeConfig, namespace, signal }: HelperContext, use: (value: BoundHelpers['portForward']) => Promise<void>) => {
      const open = new Set<PortForwardHandle>();
      try {
        await use(bindHelpers(kubeConfig, namespace, { signal, track: (forward) => open.add(forward) }).portForward);
      } finally {
        await Promise.all([...open].map((forward) => forward.close()));
      }
    },
  };
}

interface HelperContext {
  kubeConfig: KubeConfig;
  namespace: string;
  signal: AbortSignal;
}

/**
 * `test` with the cluster fixtures, its namespace in the scope asked for:
 * `export const test = createTest({ namespaceScope: 'file' })`.
 */
export function createTest(options: CreateTestOptions = {}): ReturnType<typeof extendTest> {
  return extendTest(options);
}

function extendTest(options: CreateTestOptions) {
  const scope = options.namespaceScope ?? 'test';
  const base = baseTest.extend<Pick<K3sVmFixtures, 'kubeConfig'> & K3sVmFileFixtures>({
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
  });
  const scoped = base.extend<Omit<K3sVmFixtures, 'kubeConfig'>>({
    namespace: async ({ kubeConfig, task }, use) => {
      const namespace = await createNamespaceFor(task.name, kubeConfig, useK3sVm().runId);
      try {
        await use(namespace.name);
      } finally {
        const end = await endNamespace(namespace, kubeConfig, failed(task), onFailureOf(options));
        if (failed(task)) await reportFailure(task, namespace.name, end);
      }
    },
    ...helperFixtures(),
  });
  if (scope === 'test') return scoped;
  // A file's or worker's namespace: the per-test fixture below reports each failed test, and
  // the namespace is kept at the end if one failed and that was asked for.
  interface Shared {
    namespace: TestNamespace;
    kubeConfig: KubeConfig;
    failed: boolean;
  }
  const shared = base.extend({
    k3sVmShared: [
      // eslint-disable-next-line no-empty-pattern
      async ({}, use: (value: Shared) => Promise<void>) => {
        const kubeConfig = useKubeConfig();
        const namespace = await createNamespaceFor(scope, kubeConfig, useK3sVm().runId);
        const state: Shared = { namespace, kubeConfig, failed: false };
        try {
          await use(state);
        } finally {
          if (state.failed && onFailureOf(options).keepNamespace) await markKept(kubeConfig, namespace.name);
          else await namespace.delete();
        }
      },
      { scope: scope as 'file' },
    ],
    namespace: async ({ k3sVmShared }: { k3sVmShared: Shared }, use: (value: string) => Promise<void>) => use(k3sVmShared.namespace.name),
    k3sVmFailures: [
      async ({ k3sVmShared, task }: { k3sVmShared: Shared; task: TaskLike }, use: () => Promise<void>) => {
        await use();
        if (!failed(task)) return;
        k3sVmShared.failed = true;
        const onFailure = onFailureOf(options);
        const diagnostics = onFailure.diagnostics
          ? await collectDiagnostics(k3sVmShared.kubeConfig, k3sVmShared.namespace.name, { budgetMs: diagnosticsBudgetMs })
          : undefined;
        await reportFailure(task, k3sVmShared.namespace.name, { diagnostics, kept: onFailure.keepNamespace });
      },
      { auto: true },
    ],
    ...helperFixtures(),
  } as never);
  return shared as unknown as typeof scoped;
}

/**
 * `test` with the cluster fixtures: `test('…', async ({ kubeConfig, namespace }) => …)`.
 * This module is also the global setup, which Vitest loads where there is no suite to
 * extend; there the plain `test` stands in (no test is ever declared in that context).
 */
export const test: ReturnType<typeof extendTest> = (() => {
  try {
    return extendTest({});
  } catch {
    return baseTest as unknown as ReturnType<typeof extendTest>;
  }
})();

export const it = test;
