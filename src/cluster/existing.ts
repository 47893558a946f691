// An existing cluster instead of a VM: a kubeconfig and an allowed context; runs isolated by labels, cleaned by sweeps.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { CoreV1Api, KubeConfig, V1Namespace } from '@kubernetes/client-node';
import { parse as parseYaml } from 'yaml';
import { existingClusterTimeoutSeconds } from '../config/defaults.js';
import { setting } from '../config/names.js';
import type { ResolvedConfig } from '../config/options.js';
import { isK3sVmError, K3sVmError } from '../errors.js';
import { clientNode } from '../kube/client-node.js';
import { isCredentialRefusal } from '../kube/kube-http.js';
import { apiErrorText } from '../kube/kubeconfig.js';
import { waitForReady, type ReadinessStep } from '../readiness/engine.js';
import { apiReadyz, defaultServiceAccount } from '../readiness/steps.js';
import type { Logger } from '../log.js';
import type { ConnectedCluster } from './options.js';
import {
  createdLabel,
  heartbeatAnnotation,
  keptAnnotation,
  newRunId,
  runIdLabel,
  runLabels,
  runNamespaceName,
  runSelector,
} from './run-labels.js';

/** How often a run on an existing cluster renews its heartbeat. */
const heartbeatIntervalMs = 30_000;

/** Whether a context name matches one of the allowed patterns (`*` matches anything). */
export function contextAllowed(context: string, patterns: readonly string[]): boolean {
  return patterns.some((pattern) =>
    new RegExp(
      `^${pattern
        .split('*')
        .map((part) => part.replace(/[.+?^${}()|[\]\\/]/g, '\\$&'))
        .join('.*')}$`,
    ).test(context),
  );
}

interface Selected {
  readonly kubeConfig: KubeConfig;
  readonly context: string;
  readonly server: string;
}

/**
 * The token of a user that names a token file (`tokenFile`, as kubectl writes and reads it),
 * which client-node does not read; a relative path is relative to the kubeconfig, as for kubectl.
 */
function tokenOfFile(kubeconfigPath: string, userName: string): string | undefined {
  let users: unknown;
  try {
    users = (parseYaml(readFileSync(kubeconfigPath, 'utf8')) as { users?: unknown } | null)?.users;
  } catch {
    return undefined;
  }
  const entry = Array.isArray(users)
    ? (users as Array<{ name?: unknown; user?: Record<string, unknown> }>).find((u) => u?.name === userName)
    : undefined;
  const file = entry?.user?.['tokenFile'] ?? entry?.user?.['token-file'];
  if (typeof file !== 'string' || !file) return undefined;
  const tokenPath = resolve(dirname(kubeconfigPath), file);
  try {
    return readFileSync(tokenPath, 'utf8');
  } catch (error) {
    throw new K3sVmError(
      'CONFIG_INVALID',
      `the token file ${tokenPath} of user "${userName}" in ${kubeconfigPath} cannot be read: ${(error as Error).message}`,
      {
        cause: error,
        hint: "point the user's tokenFile at a readable file, or log in again",
      },
    );
  }
}

/** Loads the kubeconfig, picks the context and refuses it unless explicitly allowed. Touches nothing. */
export function selectContext(config: ResolvedConfig): Selected {
  const path = config.kubeconfig!;
  const all = new (clientNode().KubeConfig)();
  try {
    all.loadFromFile(path);
  } catch (error) {
    throw new K3sVmError('CONFIG_INVALID', `${path} is not a kubeconfig: ${(error as Error).message}`, {
      cause: error,
      hint: `point ${config.names.kubeconfig} at a kubeconfig file`,
    });
  }
  const context = config.context ?? all.getCurrentContext();
  const entry = all.getContextObject(context);
  if (!context || !entry) {
    const known = all.getContexts().map((c) => c.name);
    throw new K3sVmError(
      'CONFIG_INVALID',
      `${path} has no context ${context ? `"${context}"` : '(and no current context)'}; it has: ${known.join(', ') || 'none'}`,
      {
        hint: `name one of its contexts with ${config.names.context}`,
      },
    );
  }
  if (!contextAllowed(context, config.allowContexts)) {
    throw new K3sVmError(
      'CONTEXT_NOT_ALLOWED',
      `k3s-vm will not run tests against context "${context}" of ${path}: it is not explicitly allowed`,
      {
        hint:
          `if that cluster is meant for tests, allow it with ${setting(config.names, 'allowContexts', context, [context])} (comma-separated patterns, * as a wildcard); ` +
          'tests create and delete namespaces there',
      },
    );
  }
  all.setCurrentContext(context);
  const cluster = all.getCurrentCluster();
  const user = all.getCurrentUser();
  if (!cluster || !user)
    throw new K3sVmError('CONFIG_INVALID', `context "${context}" of ${path} names a cluster or user that ${path} does not have`, {
      hint: 'fix the kubeconfig',
    });
  // A kubeconfig of this context alone, so that tests and kubectl cannot reach any other.
  const single = new (clientNode().KubeConfig)();
  const token = user.token ?? tokenOfFile(path, user.name);
  // A token read from a file keeps the file's newline, which no HTTP header may hold.
  const withToken = token === undefined ? user : { ...user, token: token.trim() };
  single.loadFromOptions({ clusters: [cluster], users: [withToken], contexts: [{ ...entry, name: context }], currentContext: context });
  return { kubeConfig: single, context, server: cluster.server };
}

/** The steps for an existing cluster: the kubeconfig, /readyz, and the default ServiceAccount, with the VM's step names. */
function existingClusterSteps(kubeConfig: KubeConfig, server: string, contextName: string, kubeconfigName: string): ReadinessStep[] {
  return [
    {
      name: 'kubeconfig present',
      hint: `check the kubeconfig given with ${kubeconfigName}`,
      async check(context) {
        context.kubeConfig = kubeConfig;
        context.kubeconfig = kubeConfig.exportConfig();
        context.apiServerUrl = server;
      },
    },
    {
      ...apiReadyz,
      hint: `the API server ${server} does not answer /readyz: is the cluster up, and reachable from here?`,
      async check(context) {
        try {
          await apiReadyz.check(context);
        } catch (error) {
          if (!isCredentialRefusal(error)) throw error;
          // Credentials that are refused stay refused: no use waiting out the deadline.
          throw new K3sVmError(
            'NOT_READY',
            `the API server ${server} refused the credentials of context "${contextName}" (HTTP ${error.code}${error.code === 401 ? ': not authenticated' : ': not allowed to read /readyz'})`,
            {
              cause: error,
              hint: `renew the credentials of context "${contextName}" in the kubeconfig (an expired token or certificate, a token file that is not the cluster's), or log in again`,
            },
          );
        }
      },
      fatal: (error) => isK3sVmError(error, 'NOT_READY'),
    },
    defaultServiceAccount,
  ];
}

async function namespacesOf(api: CoreV1Api, labelSelector: string): Promise<V1Namespace[]> {
  return (await api.listNamespace({ labelSelector })).items;
}

/**
 * Deletes the namespaces of runs that are dead: no heartbeat (or, without one, no namespace
 * created) for sweepAfterSeconds. Only namespaces with k3s-vm's labels are looked at.
 */
export async function sweepDeadRuns(
  api: CoreV1Api,
  options: { ownRunId: string; sweepAfterSeconds: number; logger: Logger; now?: number },
): Promise<string[]> {
  const now = options.now ?? Date.now();
  const byRun = new Map<string, V1Namespace[]>();
  for (const namespace of await namespacesOf(api, runSelector())) {
    const runId = namespace.metadata?.labels?.[runIdLabel];
    if (!runId || runId === options.ownRunId) continue;
    // Already being deleted (a sweep or a teardown that does not wait for finalizers): not again.
    if (namespace.metadata?.deletionTimestamp) continue;
    byRun.set(runId, [...(byRun.get(runId) ?? []), namespace]);
  }
  const deleted: string[] = [];
  for (const [runId, namespaces] of byRun) {
    const runNamespace = namespaces.find((ns) => ns.metadata?.name === runNamespaceName(runId));
    const heartbeat = Date.parse(runNamespace?.metadata?.annotations?.[heartbeatAnnotation] ?? '');
    let doomed = namespaces;
    let lastSign = heartbeat;
    if (!Number.isFinite(heartbeat)) {
      // Judged by when each namespace was made; one whose label cannot be read is never deleted on a guess.
      doomed = namespaces.filter((ns) => {
        if (createdAtMs(ns) !== undefined) return true;
        const value = ns.metadata?.labels?.[createdLabel];
        options.logger.warn(
          `namespace ${ns.metadata?.name} of run ${runId} is left alone: its ${createdLabel} label is ${value === undefined ? 'missing' : `"${value}", not seconds since the epoch`}; delete it yourself if it is not in use`,
        );
        return false;
      });
      if (doomed.length === 0) continue;
      lastSign = Math.max(...doomed.map((ns) => createdAtMs(ns)!));
    }
    if (now - lastSign < options.sweepAfterSeconds * 1000) continue;
    for (const namespace of doomed) {
      const name = namespace.metadata!.name!;
      await api
        .deleteNamespace({ name })
        .catch((error: unknown) => options.logger.warn(`could not delete namespace ${name} of dead run ${runId}: ${apiErrorText(error)}`));
      deleted.push(name);
    }
    options.logger.progress(`deleted ${doomed.length} namespace(s) of run ${runId}, silent since ${new Date(lastSign).toISOString()}`);
  }
  return deleted;
}

/** When k3s-vm made the namespace (its created label, in ms), or undefined when the label is missing or not a time. */
function createdAtMs(namespace: V1Namespace): number | undefined {
  const value = namespace.metadata?.labels?.[createdLabel];
  if (value === undefined || !/^\d{1,11}$/.test(value)) return undefined;
  return Number(value) * 1000;
}

/** Deletes a run's namespaces without waiting for their finalizers. */
async function deleteRunNamespaces(api: CoreV1Api, runId: string, logger: Logger): Promise<void> {
  for (const namespace of await namespacesOf(api, runSelector(runId))) {
    const name = namespace.metadata!.name!;
    if (namespace.metadata?.annotations?.[keptAnnotation]) {
      logger.progress(`leaving namespace ${name}: kept after its test failed`);
      continue;
    }
    await api
      .deleteNamespace({ name })
      .catch((error: unknown) => logger.warn(`could not delete namespace ${name}: ${apiErrorText(error)}`));
  }
}

export interface ConnectPlan {
  readonly config: ResolvedConfig;
  readonly logger: Logger;
  readonly signal?: AbortSignal | undefined;
  readonly startedAt: number;
}

/** Connects to the existing cluster, waits until it can take work, sweeps dead runs and starts this run's heartbeat. */
export async function connectExisting(plan: ConnectPlan): Promise<ConnectedCluster> {
  const { config, logger } = plan;
  const selected = selectContext(config);
  const runId = newRunId();
  logger.progress(`using the existing cluster of context "${selected.context}" (${selected.server}); run ${runId}`);
  const readyStarted = Date.now();
  const ready = await waitForReady({
    apiPort: 0,
    deadline: readyStarted + (config.timeoutSeconds ?? existingClusterTimeoutSeconds) * 1000,
    timeoutName: config.names.timeoutSeconds,
    steps: existingClusterSteps(selected.kubeConfig, selected.server, selected.context, config.names.kubeconfig),
    logger,
    signal: plan.signal,
    vmGone: () => undefined,
    serialTail: async () => '',
  });
  const api = selected.kubeConfig.makeApiClient(clientNode().CoreV1Api);
  await sweepDeadRuns(api, { ownRunId: runId, sweepAfterSeconds: config.sweepAfterSeconds, logger });

  const runNamespace = runNamespaceName(runId);
  const beat = () => ({ [heartbeatAnnotation]: new Date().toISOString() });
  await api.createNamespace({ body: { metadata: { name: runNamespace, labels: runLabels(runId), annotations: beat() } } });
  const heartbeat = setInterval(() => {
    void api
      .patchNamespace(
        { name: runNamespace, body: { metadata: { annotations: beat() } } },
        clientNode().setHeaderOptions('Content-Type', clientNode().PatchStrategy.MergePatch),
      )
      .catch((error: unknown) => logger.debug(`heartbeat of run ${runId}: ${apiErrorText(error)}`));
  }, heartbeatIntervalMs);
  heartbeat.unref();

  const folder = await mkdtemp(join(tmpdir(), 'k3s-vm-run-'));
  const kubeconfigPath = join(folder, 'kubeconfig');
  await writeFile(kubeconfigPath, ready.kubeconfig, { mode: 0o600 });
  const url = new URL(selected.server);
  let stopped: Promise<{ stoppedVm: boolean }> | undefined;
  const cluster: ConnectedCluster = {
    kind: 'existing',
    config,
    name: selected.context,
    context: selected.context,
    runId,
    kubeconfig: ready.kubeconfig,
    kubeconfigPath,
    apiServerUrl: selected.server,
    apiPort: Number(url.port || (url.protocol === 'https:' ? 443 : 80)),
    booted: false,
    timings: { totalMs: Date.now() - plan.startedAt, readyMs: Date.now() - readyStarted, steps: ready.stepDurationsMs },
    kubeConfig: () => selected.kubeConfig,
    stop: () =>
      (stopped ??= (async () => {
        clearInterval(heartbeat);
        await deleteRunNamespaces(api, runId, logger);
        await rm(folder, { recursive: true, force: true });
        logger.progress(`deleted the namespaces of run ${runId}`);
        return { stoppedVm: false };
      })()),
    [Symbol.asyncDispose]: async () => {
      await cluster.stop();
    },
  };
  return cluster;
}
