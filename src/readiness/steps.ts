// The readiness steps, each a named constant, and the list a K3s VM waits for, at a boot and
// after a snapshot restore alike (the restore is the context's restoredAt, which "node Ready" reads).
import type { KubeConfig } from '@kubernetes/client-node';
import { GuestSsh } from '../guest/ssh.js';
import { clientNode } from '../kube/client-node.js';
import { endpointOf, KubeHttp } from '../kube/kube-http.js';
import { apiErrorText, apiReady, guestKubeconfigPath, loadKubeConfig, rewriteKubeconfig } from '../kube/kubeconfig.js';
import type { ReadinessContext, ReadinessStep } from './engine.js';

/** Clock difference between host and guest that a fresh heartbeat may still show. */
const clockSkewMs = 2000;

/** Longest single SSH handshake attempt; a guest that just started listening answers well within it. */
const sshAttemptMs = 5000;

/** A step that needs the guest's shell, in a wait for a cluster without a VM: a list composed wrongly. */
class NoVmError extends Error {
  constructor() {
    super('this wait has no VM to reach over SSH (no SSH target): its list of steps must not include "SSH answers"');
  }
}

function kubeConfigOf(context: ReadinessContext): KubeConfig {
  if (!context.kubeConfig) throw new Error('no kubeconfig yet');
  return context.kubeConfig;
}

/**
 * The steps' shared connection to the API, opened on first use; undefined when the kubeconfig's
 * user needs client-node (an exec plugin or auth provider), which then serves every request.
 */
function apiOf(context: ReadinessContext): KubeHttp | undefined {
  const open = connections.get(context);
  if (open) return open;
  const endpoint = endpointOf(kubeConfigOf(context));
  if (!endpoint) return undefined;
  const http = new KubeHttp(endpoint);
  connections.set(context, http);
  context.onEnd(() => http.close());
  return http;
}

/** Each wait's connection to the API, closed when the wait ends or the kubeconfig changes. */
const connections = new WeakMap<ReadinessContext, KubeHttp>();

/**
 * Throws unless the aggregated API of the APIService `name` (`<version>.<group>`) answers its
 * discovery request through the API server now (the aggregator answers 503 while it cannot
 * reach the service behind it).
 */
async function answersDiscovery(context: ReadinessContext, name: string): Promise<void> {
  const dot = name.indexOf('.');
  const path = `/apis/${name.slice(dot + 1)}/${name.slice(0, dot)}`;
  const api = apiOf(context);
  // A kubeconfig whose user needs client-node (an exec plugin) has no plain GET here; K3s's own
  // (client certificates) always has one.
  if (!api) return;
  try {
    await api.get(path, undefined, context.signal);
  } catch (error) {
    throw new Error(`APIService ${name} reads Available, but its API does not answer yet (GET ${path}: ${(error as Error).message})`, {
      cause: error,
    });
  }
}

/** Epoch ms of a Kubernetes timestamp: a Date from client-node's typed API, a string from a watch. */
function timeOf(value: unknown): number | undefined {
  if (value instanceof Date) return value.getTime();
  if (typeof value !== 'string') return undefined;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? undefined : ms;
}

interface KubeObject {
  readonly metadata?: { readonly name?: string | undefined; readonly namespace?: string | undefined } | undefined;
}

interface Condition {
  readonly type: string;
  readonly status: string;
  readonly reason?: string | undefined;
  readonly message?: string | undefined;
  readonly lastHeartbeatTime?: unknown;
  readonly lastTransitionTime?: unknown;
}

function conditionOf(
  object: { status?: { conditions?: readonly Condition[] | undefined } | undefined },
  type: string,
): Condition | undefined {
  return object.status?.conditions?.find((condition) => condition.type === type);
}

function conditionText(condition: Condition | undefined, missing: string): string {
  if (!condition) return missing;
  const why = condition.reason ?? condition.status;
  return condition.message ? `${why}: ${condition.message}` : why;
}

const keyOf = (object: KubeObject) => `${object.metadata?.namespace ?? ''}/${object.metadata?.name ?? ''}`;

interface Listed<T> {
  readonly items: readonly T[];
  readonly metadata?: { readonly resourceVersion?: string | undefined } | undefined;
}

interface ListThenWatch<T extends KubeObject> {
  /** The API path listed, and watched with the same query. */
  readonly path: string;
  readonly query?: Record<string, string | undefined>;
  /** The same list through client-node, for users only it can authenticate. */
  readonly list: () => Promise<Listed<T>>;
  /** A 404 for the collection itself means there is nothing to wait for. */
  readonly absentMeansMet?: boolean;
  /** Why the objects do not satisfy the step yet; undefined when they do. */
  readonly unmet: (objects: readonly T[]) => string | undefined;
}

/**
 * Lists the objects and, while they do not satisfy the step, watches from the list's
 * resourceVersion until an event does: the step is noticed as soon as the API server knows.
 * A watch that ends, fails or cannot be opened fails the attempt; the engine's retry then
 * lists again, so without watches this is a poll.
 */
async function listThenWatch<T extends KubeObject>(context: ReadinessContext, request: ListThenWatch<T>): Promise<void> {
  const http = apiOf(context);
  let listed: Listed<T>;
  try {
    listed = http ? await http.getJson<Listed<T>>(request.path, request.query, context.signal) : await request.list();
  } catch (error) {
    if (request.absentMeansMet && isHttpStatus(error, 404)) return;
    throw error;
  }
  const objects = new Map<string, T>(listed.items.map((item) => [keyOf(item), item]));
  let reason = request.unmet([...objects.values()]);
  if (reason === undefined) return;
  const kubeConfig = kubeConfigOf(context);
  const { signal } = context;
  await new Promise<void>((resolve, reject) => {
    let watch: { abort(): void } | undefined;
    let settled = false;
    const finish = (error?: Error) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      watch?.abort();
      if (error) reject(error);
      else resolve();
    };
    // What the step still waits for is the most useful "last error" when the deadline ends it.
    const onAbort = () => finish(new Error(reason));
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    const query = { ...request.query, resourceVersion: listed.metadata?.resourceVersion, allowWatchBookmarks: true };
    const watching = http
      ? (path: string, q: typeof query, onEvent: (type: string, object: unknown) => void, onDone: (error?: unknown) => void) =>
          http.watch(path, q, onEvent, onDone)
      : (path: string, q: typeof query, onEvent: (type: string, object: unknown) => void, onDone: (error?: unknown) => void) =>
          new (clientNode().Watch)(kubeConfig).watch(path, q, onEvent, onDone);
    watching(
      request.path,
      query,
      (type: string, object: unknown) => {
        if (type === 'ERROR') {
          const status = object as { message?: string; code?: number } | undefined;
          return finish(new Error(`${reason} (the watch failed: ${status?.message ?? `HTTP ${status?.code}`})`));
        }
        if ((type !== 'ADDED' && type !== 'MODIFIED' && type !== 'DELETED') || typeof object !== 'object' || object === null) return;
        const item = object as T;
        if (type === 'DELETED') objects.delete(keyOf(item));
        else objects.set(keyOf(item), item);
        reason = request.unmet([...objects.values()]);
        if (reason === undefined) finish();
      },
      (error: unknown) =>
        finish(new Error(`${reason} (${error ? `the watch failed: ${apiErrorText(error)}` : 'the watch ended'})`, { cause: error })),
    ).then(
      (controller) => {
        watch = controller;
        if (settled) controller.abort();
      },
      (error: unknown) => finish(new Error(`${reason} (the watch could not be opened: ${apiErrorText(error)})`, { cause: error })),
    );
  });
}

/** When the node's Ready condition was last reported. */
function reportedTime(ready: Condition): number | undefined {
  return timeOf(ready.lastHeartbeatTime) ?? timeOf(ready.lastTransitionTime);
}

/**
 * Whether a heartbeat at `at` came after `since`, give or take the clocks' skew. Kubernetes
 * timestamps have whole seconds (a Lease's MicroTime more): the report may have come up to a
 * second later than it reads.
 */
function heardSince(at: number | undefined, since: number): boolean {
  return at !== undefined && at + 999 >= since - clockSkewMs;
}

/** Why the node is not (freshly) Ready; undefined when it is. */
function nodeNotReady(
  node: KubeObject & { status?: { conditions?: readonly Condition[] } | undefined },
  bootStartedAt: number | undefined,
): string | undefined {
  const name = node.metadata?.name ?? '(unnamed)';
  const ready = conditionOf(node, 'Ready');
  if (ready?.status !== 'True') return `node ${name} is not Ready (${conditionText(ready, 'no Ready condition')})`;
  if (bootStartedAt === undefined) return undefined;
  // A reused disk still holds the last boot's Ready condition until the kubelet reports again.
  const reportedAt = reportedTime(ready);
  if (!heardSince(reportedAt, bootStartedAt)) {
    const when = reportedAt === undefined ? 'at an unknown time' : new Date(reportedAt).toISOString();
    return `node ${name} is Ready only as last reported ${when}, before this boot (${new Date(bootStartedAt).toISOString()}); waiting for the kubelet to report`;
  }
  return undefined;
}

/**
 * "node Ready" for a restored VM: the node's Ready condition must be True, and its heartbeat
 * newer than the restore (restoredAt), which either of two shows:
 *  - the Ready condition's lastHeartbeatTime (what the step of a boot looks at); or
 *  - the node's Lease in kube-node-lease (spec.renewTime).
 * After a restore the kubelet patches its status only when something changed or once
 * nodeStatusReportFrequency (5 min) has passed on its monotonic clock, which the restore did
 * not advance (kubernetes pkg/kubelet/kubelet_node_status.go, tryUpdateNodeStatus); its
 * Lease is renewed every 10 s with the wall clock's time (component-helpers
 * apimachinery/lease/controller.go, newLease), so the Lease is the heartbeat that shows a
 * kubelet alive after the restore within seconds, where the condition could take minutes.
 */
async function nodeReadyAfterRestore(context: ReadinessContext, restoredAt: number): Promise<void> {
  // On the steps' connection, which /readyz has just opened: after a rewind, a second one (a
  // TLS handshake under emulation) would be most of this step's time. Through client-node only
  // for users it alone can authenticate.
  const http = apiOf(context);
  const kubeConfig = kubeConfigOf(context);
  const read = <T>(path: string, throughClientNode: () => Promise<unknown>): Promise<T> =>
    http ? http.getJson<T>(path, undefined, context.signal) : (throughClientNode() as Promise<T>);
  type NodeObject = KubeObject & { status?: { conditions?: Condition[] } };
  const core = () => kubeConfig.makeApiClient(clientNode().CoreV1Api);
  const readNodes = async (): Promise<readonly NodeObject[]> => {
    const name = context.nodeName;
    if (name !== undefined) return [await read<NodeObject>(`/api/v1/nodes/${encodeURIComponent(name)}`, () => core().readNode({ name }))];
    return (await read<Listed<NodeObject>>('/api/v1/nodes', () => core().listNode())).items;
  };
  const leaseRenewTime = async (name: string): Promise<unknown> => {
    const lease = await read<{ spec?: { renewTime?: unknown } }>(
      `/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/${encodeURIComponent(name)}`,
      () => kubeConfig.makeApiClient(clientNode().CoordinationV1Api).readNamespacedLease({ name, namespace: 'kube-node-lease' }),
    );
    return lease.spec?.renewTime;
  };
  const nodes = await readNodes();
  if (nodes.length === 0) throw new Error('no node has registered yet');
  for (const node of nodes) {
    const name = node.metadata?.name ?? '(unnamed)';
    const ready = conditionOf(node, 'Ready');
    if (ready?.status !== 'True') throw new Error(`node ${name} is not Ready (${conditionText(ready, 'no Ready condition')})`);
    const reportedAt = reportedTime(ready);
    if (heardSince(reportedAt, restoredAt)) continue;
    let renewedAt: number | undefined;
    let leaseProblem = '';
    try {
      renewedAt = timeOf(await leaseRenewTime(name));
    } catch (error) {
      leaseProblem = ` (its lease could not be read: ${apiErrorText(error)})`;
    }
    if (heardSince(renewedAt, restoredAt)) continue;
    const when = (at: number | undefined) => (at === undefined ? 'never' : new Date(at).toISOString());
    throw new Error(
      `node ${name} is Ready as last reported ${when(reportedAt)}, its lease last renewed ${when(renewedAt)}${leaseProblem}, ` +
        `both before the restore (${new Date(restoredAt).toISOString()}); waiting for the kubelet's next heartbeat`,
    );
  }
}

function isHttpStatus(error: unknown, code: number): boolean {
  return (error as { code?: unknown } | undefined)?.code === code;
}

/**
 * Reads K3s's kubeconfig from the guest into the context, rewritten for the host; true when
 * it differs from the one read before, whose API connection is then closed.
 */
async function readGuestKubeconfig(context: ReadinessContext): Promise<boolean> {
  const text = await context.ssh.readFile(guestKubeconfigPath, { signal: context.signal });
  if (!text?.trim()) throw new Error(`${guestKubeconfigPath} does not exist yet`);
  if (text === context.guestKubeconfig) return false;
  const rewritten = rewriteKubeconfig(text, context.apiPort, context.contextName);
  context.guestKubeconfig = text;
  context.kubeconfig = rewritten.kubeconfig;
  context.apiServerUrl = rewritten.apiServerUrl;
  context.kubeConfig = loadKubeConfig(rewritten.kubeconfig);
  connections.get(context)?.close();
  connections.delete(context);
  return true;
}

export const sshAnswers: ReadinessStep = {
  name: 'SSH answers',
  hint: 'the guest did not finish booting: read the serial log above (or k3s-vm logs)',
  // User-mode networking accepts on the forwarded port before the guest listens: only a
  // completed handshake counts, which GuestSsh.connect is.
  async check(context) {
    const { target } = context;
    if (!target) throw new NoVmError();
    const timeoutMs = Math.max(1, Math.min(context.deadline - Date.now(), sshAttemptMs));
    try {
      context.ssh = await GuestSsh.connect(target, timeoutMs, context.signal);
    } catch (error) {
      if (!context.signal.aborted) throw error;
      const { host = '127.0.0.1', port } = target;
      throw new Error(`the SSH handshake with ${host}:${port} had not completed`, { cause: error });
    }
  },
  // The key is in the guest before its SSH server starts: a refused key stays refused.
  fatal: (error) => error instanceof NoVmError || (error as { level?: unknown } | undefined)?.level === 'client-authentication',
};

export const k3sServiceActive: ReadinessStep = {
  name: 'k3s service active',
  hint: 'K3s did not start: look at `k3s-vm ssh -- journalctl -u k3s` and the serial log',
  async check({ ssh, signal }) {
    const result = await ssh.exec('systemctl is-active k3s', { signal });
    const state = result.stdout.trim() || result.stderr.trim();
    if (result.exitCode !== 0 || state !== 'active') throw new Error(`systemctl is-active k3s says "${state}"`);
  },
};

export const kubeconfigPresent: ReadinessStep = {
  name: 'kubeconfig present',
  hint: `K3s writes ${guestKubeconfigPath} once its API server is up; see \`journalctl -u k3s\` in the guest`,
  async check(context) {
    await readGuestKubeconfig(context);
  },
};

export const apiReadyz: ReadinessStep = {
  name: 'API /readyz ok',
  hint: 'the API server does not answer through the forwarded port: check that the guest firewall lets 6443 in',
  async check(context) {
    try {
      const http = apiOf(context);
      const ok = http ? await http.readyz(context.signal) : await apiReady(kubeConfigOf(context), context.signal);
      if (!ok) throw new Error('/readyz did not answer ok');
    } catch (error) {
      // The file step 3 read can be the last boot's, still on the disk until K3s writes its
      // own (a rebuilt VM may come with a new certificate authority): read it again.
      if (await readGuestKubeconfig(context).catch(() => false)) {
        throw new Error(`${guestKubeconfigPath} changed since it was read (K3s rewrote it); trying again with the new one`, {
          cause: error,
        });
      }
      throw error;
    }
  },
};

export const nodeReady: ReadinessStep = {
  name: 'node Ready',
  runsAhead: true,
  hint: 'the node has not become Ready: `k3s-vm kubectl describe nodes` shows why (after a restore, `k3s-vm kubectl get lease -n kube-node-lease` shows its last heartbeat too)',
  async check(context) {
    const { nodeName, bootStartedAt } = context;
    if (context.restoredAt !== undefined) return nodeReadyAfterRestore(context, context.restoredAt);
    const core = kubeConfigOf(context).makeApiClient(clientNode().CoreV1Api);
    const fieldSelector = nodeName === undefined ? undefined : `metadata.name=${nodeName}`;
    await listThenWatch(context, {
      path: '/api/v1/nodes',
      query: { fieldSelector },
      list: () => core.listNode(fieldSelector === undefined ? {} : { fieldSelector }),
      unmet: (nodes) => {
        const ours = nodeName === undefined ? nodes : nodes.filter((node) => node.metadata?.name === nodeName);
        if (ours.length === 0) return nodeName === undefined ? 'no node has registered yet' : `node ${nodeName} has not registered yet`;
        for (const node of ours) {
          const reason = nodeNotReady(node as Parameters<typeof nodeNotReady>[0], bootStartedAt);
          if (reason) return reason;
        }
        return undefined;
      },
    });
  },
};

export const apiDiscoveryComplete: ReadinessStep = {
  name: 'API discovery complete',
  runsAhead: true,
  hint: 'an aggregated API (often metrics-server) is not available, which stalls namespace deletion: `k3s-vm kubectl get apiservices` shows which and why',
  async check(context) {
    const registration = kubeConfigOf(context).makeApiClient(clientNode().ApiregistrationV1Api);
    const required = context.requiredApiServices;
    await listThenWatch(context, {
      path: '/apis/apiregistration.k8s.io/v1/apiservices',
      list: () => registration.listAPIService(),
      // No aggregation layer at all: nothing can be unavailable (unless an APIService is required).
      absentMeansMet: required.length === 0,
      unmet: (services) => {
        // K3s registers metrics-server's APIService only when its deploy controller applies the
        // addon, after the API server is up: an empty or partial list is not "all available".
        const missing = required.find((name) => !services.some((service) => service.metadata?.name === name));
        if (missing) return `APIService ${missing} is not registered yet`;
        const unavailable = services.filter(
          (service) => conditionOf(service as { status?: { conditions?: Condition[] } }, 'Available')?.status !== 'True',
        );
        const first = unavailable[0];
        if (!first) return undefined;
        const available = conditionOf(first as { status?: { conditions?: Condition[] } }, 'Available');
        const others = unavailable.length > 1 ? ` and ${unavailable.length - 1} more` : '';
        return `APIService ${first.metadata?.name} is not Available (${conditionText(available, 'no Available condition')})${others}`;
      },
    });
    // An Available condition can be the one stored before this boot (a kept disk): only an
    // answer now from the API behind it shows it is available in this boot.
    for (const name of required) await answersDiscovery(context, name);
  },
};

export const defaultServiceAccount: ReadinessStep = {
  name: 'default ServiceAccount exists',
  runsAhead: true,
  hint: 'the controller manager has not created the default ServiceAccount; pods cannot be created until it does',
  async check(context) {
    const core = kubeConfigOf(context).makeApiClient(clientNode().CoreV1Api);
    const fieldSelector = 'metadata.name=default';
    await listThenWatch(context, {
      path: '/api/v1/namespaces/default/serviceaccounts',
      query: { fieldSelector },
      list: () => core.listNamespacedServiceAccount({ namespace: 'default', fieldSelector }),
      unmet: (accounts) =>
        accounts.some((account) => account.metadata?.name === 'default')
          ? undefined
          : 'the default ServiceAccount does not exist yet in namespace default',
    });
  },
};

/**
 * The steps a K3s VM waits for, in order: at a boot, and after a restore or a rewind (with the
 * context's restoredAt). A list of one's own is composed of these constants and steps of one's own.
 */
export const k3sReadinessSteps: readonly ReadinessStep[] = [
  sshAnswers,
  k3sServiceActive,
  kubeconfigPresent,
  apiReadyz,
  nodeReady,
  apiDiscoveryComplete,
  defaultServiceAccount,
];

/**
 * The steps after a rewind whose clock the guest agent has set: the API's alone, with the
 * kubeconfig the host holds (the engine's kubeconfig option). The VM kept running through the
 * rewind and its snapshot was saved ready; the API server answering through the forwarded port
 * with the host's credentials, and the node's heartbeat since the rewind, show the restored
 * guest running — no SSH handshake needed.
 */
export const k3sRewindSteps: readonly ReadinessStep[] = [
  // Checked together from the start, /readyz too: the API server was ready when the snapshot was saved.
  { ...apiReadyz, runsAhead: true },
  nodeReady,
  apiDiscoveryComplete,
  defaultServiceAccount,
];

/** The APIService K3s's packaged metrics-server registers. */
export const metricsApiService = 'v1beta1.metrics.k8s.io';

/** The APIServices a K3s with these packaged components turned off must have before it is ready. */
export function requiredApiServicesFor(disable: readonly string[]): readonly string[] {
  return disable.includes('metrics-server') ? [] : [metricsApiService];
}
