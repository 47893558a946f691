// Readiness: an ordered list of named steps that together mean "tests can create pods", run by one retry engine.
import type { KubeConfig } from '@kubernetes/client-node';
import pRetry, { AbortError } from 'p-retry';
import { K3sVmError } from '../errors.js';
import type { Logger } from '../log.js';
import { clientNode } from '../kube/client-node.js';
import { endpointOf, KubeHttp } from '../kube/kube-http.js';
import { apiErrorText, apiReady, guestKubeconfigPath, loadKubeConfig, rewriteKubeconfig } from '../kube/kubeconfig.js';
import { GuestSsh, type GuestShell, type SshTarget } from '../guest/ssh.js';

/** What the steps share: where the guest is, the connection to it, and what earlier steps found. */
export interface ReadinessContext {
  /** Where the guest's SSH server is reached (the forwarded port and the instance key). */
  readonly target: SshTarget;
  /**
   * The guest's shell. The first step ("SSH answers") sets it; reading it before that throws,
   * so the steps after it use it as is.
   */
  ssh: GuestShell;
  /** Host port forwarded to the guest's API server (6443). */
  readonly apiPort: number;
  /** Name given to the kubeconfig's context, cluster and user (instead of K3s's `default`). */
  readonly contextName: string | undefined;
  /** This instance's node; undefined: every registered node counts. */
  readonly nodeName: string | undefined;
  /** When this boot started (epoch ms); a Ready condition last reported before it is stale. */
  readonly bootStartedAt: number | undefined;
  /** APIServices (`v1beta1.metrics.k8s.io`) that must be registered and answer before the cluster counts as ready. */
  readonly requiredApiServices: readonly string[];
  /** The overall deadline (epoch ms). */
  readonly deadline: number;
  /** Aborts when the wait ends for any reason: deadline, VM gone, outer abort. */
  readonly signal: AbortSignal;
  /** K3s's kubeconfig as the guest holds it (before it is rewritten for the host). */
  guestKubeconfig?: string;
  kubeconfig?: string;
  apiServerUrl?: string;
  kubeConfig?: KubeConfig;
}

export interface ReadinessStep {
  readonly name: string;
  /** What to look at when this step does not pass. */
  readonly hint: string;
  /**
   * Resolves when the step holds; throws (with the reason) while it does not yet. A step that
   * waits in one attempt (a watch) rejects with what it still waits for when the signal aborts.
   */
  check(context: ReadinessContext): Promise<void>;
  /** An error that will never go away: ends the wait at once instead of retrying. */
  readonly fatal?: (error: unknown) => boolean;
  /**
   * The step only reads what an earlier step has already made available (the API): it is
   * checked together with the steps next to it that may run ahead too, and reported in its
   * turn, its time counted from the step before it. Errors still name the first step that
   * did not pass.
   */
  readonly runsAhead?: boolean;
}

/** Clock difference between host and guest that a fresh heartbeat may still show. */
const clockSkewMs = 2000;

/** Longest single SSH handshake attempt; a guest that just started listening answers well within it. */
const sshAttemptMs = 5000;

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
  return http;
}

/** Each wait's connection to the API, closed when the wait ends. */
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
  const reportedAt = timeOf(ready.lastHeartbeatTime) ?? timeOf(ready.lastTransitionTime);
  // Kubernetes timestamps have whole seconds: the report may have come up to a second later.
  if (reportedAt === undefined || reportedAt + 999 < bootStartedAt - clockSkewMs) {
    const when = reportedAt === undefined ? 'at an unknown time' : new Date(reportedAt).toISOString();
    return `node ${name} is Ready only as last reported ${when}, before this boot (${new Date(bootStartedAt).toISOString()}); waiting for the kubelet to report`;
  }
  return undefined;
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

/** The K3s readiness steps, in order. Add a step here. */
export const k3sReadinessSteps: readonly ReadinessStep[] = [
  {
    name: 'SSH answers',
    hint: 'the guest did not finish booting: read the serial log above (or k3s-vm logs); under emulation, raise K3S_VM_TIMEOUT',
    // User-mode networking accepts on the forwarded port before the guest listens: only a
    // completed handshake counts, which GuestSsh.connect is.
    async check(context) {
      const timeoutMs = Math.max(1, Math.min(context.deadline - Date.now(), sshAttemptMs));
      try {
        context.ssh = await GuestSsh.connect(context.target, timeoutMs, context.signal);
      } catch (error) {
        if (!context.signal.aborted) throw error;
        const { host = '127.0.0.1', port } = context.target;
        throw new Error(`the SSH handshake with ${host}:${port} had not completed`, { cause: error });
      }
    },
    // The key is in the guest before its SSH server starts: a refused key stays refused.
    fatal: (error) => (error as { level?: unknown } | undefined)?.level === 'client-authentication',
  },
  {
    name: 'k3s service active',
    hint: 'K3s did not start: look at `k3s-vm ssh -- journalctl -u k3s` and the serial log',
    async check({ ssh, signal }) {
      const result = await ssh.exec('systemctl is-active k3s', { signal });
      const state = result.stdout.trim() || result.stderr.trim();
      if (result.exitCode !== 0 || state !== 'active') throw new Error(`systemctl is-active k3s says "${state}"`);
    },
  },
  {
    name: 'kubeconfig present',
    hint: `K3s writes ${guestKubeconfigPath} once its API server is up; see \`journalctl -u k3s\` in the guest`,
    async check(context) {
      await readGuestKubeconfig(context);
    },
  },
  {
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
  },
  {
    name: 'node Ready',
    runsAhead: true,
    hint: 'the node has not become Ready: `k3s-vm kubectl describe nodes` shows why',
    async check(context) {
      const { nodeName, bootStartedAt } = context;
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
  },
  {
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
  },
  {
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
  },
];

/** The APIService K3s's packaged metrics-server registers. */
export const metricsApiService = 'v1beta1.metrics.k8s.io';

/** The APIServices a K3s with these packaged components turned off must have before it is ready. */
export function requiredApiServicesFor(disable: readonly string[]): readonly string[] {
  return disable.includes('metrics-server') ? [] : [metricsApiService];
}

export interface WaitForReadyOptions {
  /** The guest's SSH server: forwarded port and the instance key. */
  readonly target: SshTarget;
  /** Host port forwarded to the guest's API server. */
  readonly apiPort: number;
  /** Name for the kubeconfig's context, cluster and user. @default K3s's `default` */
  readonly contextName?: string | undefined;
  /** This instance's node. @default any registered node */
  readonly nodeName?: string | undefined;
  /** When this boot started (Date or epoch ms): older Ready reports are stale. @default no staleness check */
  readonly bootStartedAt?: Date | number | undefined;
  /**
   * APIServices that must be registered, Available and answering ("API discovery complete"):
   * `v1beta1.metrics.k8s.io` unless metrics-server is disabled (requiredApiServicesFor). @default []
   */
  readonly requiredApiServices?: readonly string[] | undefined;
  /** The overall deadline (epoch ms). */
  readonly deadline: number;
  /** @default k3sReadinessSteps */
  readonly steps?: readonly ReadinessStep[] | undefined;
  readonly logger: Logger;
  readonly signal?: AbortSignal | undefined;
  /** A reason when the VM is gone (ends the wait at once). */
  readonly vmGone: () => string | undefined;
  /** Tail of the VM's serial log, shown with a failure. */
  readonly serialTail: () => Promise<string>;
}

export interface ReadyCluster {
  /** The rewritten kubeconfig (server https://127.0.0.1:<apiPort>). */
  readonly kubeconfig: string;
  readonly apiServerUrl: string;
  /** Elapsed time of each step, in order. */
  readonly stepDurationsMs: ReadonlyArray<{ name: string; ms: number }>;
}

/** The context the engine hands the steps: `ssh` throws until a step sets it. */
class StepContext implements ReadinessContext {
  #ssh: GuestShell | undefined;
  kubeconfig?: string;
  apiServerUrl?: string;
  kubeConfig?: KubeConfig;

  constructor(
    readonly target: SshTarget,
    readonly apiPort: number,
    readonly contextName: string | undefined,
    readonly nodeName: string | undefined,
    readonly bootStartedAt: number | undefined,
    readonly requiredApiServices: readonly string[],
    readonly deadline: number,
    readonly signal: AbortSignal,
  ) {}

  get ssh(): GuestShell {
    if (!this.#ssh) throw new Error('no SSH connection yet (the step "SSH answers" has not passed)');
    return this.#ssh;
  }

  set ssh(shell: GuestShell) {
    if (this.#ssh !== shell) this.#ssh?.close?.();
    this.#ssh = shell;
  }

  /** Closes the connections the steps opened: SSH and the API's. */
  closeConnections(): void {
    this.#ssh?.close?.();
    this.#ssh = undefined;
    connections.get(this)?.close();
    connections.delete(this);
  }
}

/** Why the wait ended early; the engine turns it into the error. */
type Ending = { kind: 'deadline' } | { kind: 'outer' } | { kind: 'gone'; reason: string };

/**
 * Settles with the step's own outcome, or with the signal's reason once it aborts. A step that
 * reacts to the abort itself (saying what it waited for) is given a turn of the event loop first.
 */
function untilAborted(work: Promise<void>, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => setImmediate(() => reject(signal.reason));
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/**
 * Runs the steps in order, each retried with backoff capped at 150 ms (so a step is noticed
 * soon after it becomes true), all under one deadline. The VM exiting or the outer signal ends
 * the wait at once; so does an error a step calls fatal. On failure the error names the step,
 * its last error and the tail of the serial log. Closes the SSH connection the steps opened.
 */
export async function waitForReady(options: WaitForReadyOptions): Promise<ReadyCluster> {
  const steps = options.steps ?? k3sReadinessSteps;
  const total = steps.length;
  const controller = new AbortController();
  let ending: Ending | undefined;
  const end = (why: Ending, reason: unknown) => {
    if (ending) return;
    ending = why;
    controller.abort(reason);
  };
  const vmGone = (): string | undefined => {
    const reason = options.vmGone();
    if (reason) end({ kind: 'gone', reason }, new Error(reason));
    return reason;
  };
  const remainingMs = Math.max(0, options.deadline - Date.now());
  const deadlineTimer = setTimeout(() => end({ kind: 'deadline' }, new Error('the readiness deadline passed')), remainingMs);
  // A step can wait on one attempt for long (a watch): notice a dead VM without waiting for it.
  const goneTimer = setInterval(vmGone, 100);
  goneTimer.unref();
  const onOuterAbort = () => end({ kind: 'outer' }, options.signal?.reason);
  if (options.signal?.aborted) onOuterAbort();
  else options.signal?.addEventListener('abort', onOuterAbort, { once: true });
  const bootStartedAt = options.bootStartedAt instanceof Date ? options.bootStartedAt.getTime() : options.bootStartedAt;
  const context = new StepContext(
    options.target,
    options.apiPort,
    options.contextName,
    options.nodeName,
    bootStartedAt,
    options.requiredApiServices ?? [],
    options.deadline,
    controller.signal,
  );
  const durations: Array<{ name: string; ms: number }> = [];
  const label = (index: number) => `step ${index + 1} of ${total} "${steps[index]?.name}"`;
  if (total > 0) options.logger.progress(`${label(0)}: waiting (deadline ${Math.round(remainingMs / 1000)} s)`);
  /** One step's retries, started when its turn comes, or earlier for a step that may run ahead. */
  interface Run {
    readonly done: Promise<void>;
    lastError: unknown;
    fatal: boolean;
  }
  const runs = new Map<number, Run>();
  const start = (index: number): Run => {
    const existing = runs.get(index);
    if (existing) return existing;
    const step = steps[index]!;
    const run: Run = { done: Promise.resolve(), lastError: undefined, fatal: false };
    (run as { done: Promise<void> }).done = pRetry(
      async () => {
        if (vmGone()) throw controller.signal.reason;
        try {
          await untilAborted(step.check(context), controller.signal);
        } catch (error) {
          if (error !== controller.signal.reason) run.lastError = error;
          if (!controller.signal.aborted && step.fatal?.(error)) {
            run.fatal = true;
            throw new AbortError(error instanceof Error ? error : new Error(apiErrorText(error)));
          }
          // p-retry gives up on a TypeError; here every error short of a fatal one is retried.
          throw error instanceof TypeError ? new Error(error.message, { cause: error }) : error;
        }
      },
      {
        retries: Number.POSITIVE_INFINITY,
        minTimeout: 50,
        // The cap bounds how late a step that just became true is noticed.
        maxTimeout: 150,
        factor: 1.5,
        randomize: false,
        signal: controller.signal,
        unref: true,
        onFailedAttempt: () => options.logger.debug(`${label(index)}: ${apiErrorText(run.lastError)}`),
      },
    );
    // Awaited in its turn; until then a failure must not count as unhandled.
    run.done.catch(() => undefined);
    runs.set(index, run);
    return run;
  };
  try {
    let stepStarted = Date.now();
    for (const [index, step] of steps.entries()) {
      // A run of steps that may run ahead starts together: when the last of them becomes true,
      // the others have been noticed already and cost no further round trip.
      if (step.runsAhead) for (let next = index; next < total && steps[next]!.runsAhead; next++) start(next);
      const run = start(index);
      try {
        await run.done;
      } catch (error) {
        throw await failure(options, {
          label: label(index),
          step,
          ending,
          fatal: run.fatal,
          lastError: run.lastError ?? error,
          waitedMs: Date.now() - stepStarted,
        });
      }
      const ms = Date.now() - stepStarted;
      stepStarted = Date.now();
      durations.push({ name: step.name, ms });
      options.logger.progress(`ready: ${label(index)} (${(ms / 1000).toFixed(1)} s)`);
    }
  } finally {
    // Steps that ran ahead stop with the wait.
    if (!controller.signal.aborted) controller.abort(new Error('the readiness wait ended'));
    clearTimeout(deadlineTimer);
    clearInterval(goneTimer);
    options.signal?.removeEventListener('abort', onOuterAbort);
    context.closeConnections();
  }
  if (!context.kubeconfig || !context.apiServerUrl) {
    throw new K3sVmError('NOT_READY', 'the readiness steps finished without reading the kubeconfig');
  }
  return { kubeconfig: context.kubeconfig, apiServerUrl: context.apiServerUrl, stepDurationsMs: durations };
}

/** The one error shape for every step. */
async function failure(
  options: WaitForReadyOptions,
  ended: { label: string; step: ReadinessStep; ending: Ending | undefined; fatal: boolean; lastError: unknown; waitedMs: number },
): Promise<K3sVmError> {
  const { label, step, ending, lastError } = ended;
  if (ending?.kind === 'outer') {
    const reason: unknown = options.signal?.reason;
    return reason instanceof K3sVmError ? reason : new K3sVmError('ABORTED', `aborted while waiting for ${label}`, { cause: reason });
  }
  const details = await options.serialTail().catch((error: unknown) => `(the serial log could not be read: ${apiErrorText(error)})`);
  if (ending?.kind === 'gone') {
    // Asked again: by now the exit status has usually arrived as well.
    return new K3sVmError('QEMU_EXITED', `the VM stopped while waiting for ${label}: ${options.vmGone() ?? ending.reason}`, {
      details,
      hint: step.hint,
    });
  }
  const last = lastError === undefined ? 'none' : apiErrorText(lastError);
  if (ended.fatal) {
    return new K3sVmError('NOT_READY', `K3s cannot become ready (${label}); error: ${last}`, {
      details,
      // A step's fatal error may know the remedy better than the step.
      hint: (lastError instanceof K3sVmError && lastError.hint) || step.hint,
      cause: lastError,
    });
  }
  const seconds = Math.round(ended.waitedMs / 1000);
  return new K3sVmError('NOT_READY', `K3s not ready before the deadline (${label}, waited ${seconds} s); last error: ${last}`, {
    details,
    hint: step.hint,
    cause: lastError,
  });
}
