// Readiness: an ordered list of named steps that together mean "tests can create pods".
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import pRetry, { AbortError } from 'p-retry';
import { K3sVmError } from '../errors.js';
import type { Logger } from '../log.js';
import { apiReady, guestKubeconfigPath, loadKubeConfig, rewriteKubeconfig } from './kubeconfig.js';
import type { GuestSsh } from './ssh.js';

/** What the steps share: the SSH connection, and what earlier steps found. */
export interface ReadinessContext {
  readonly ssh: GuestSsh;
  readonly apiPort: number;
  readonly contextName: string | undefined;
  readonly signal: AbortSignal;
  kubeconfig?: string;
  apiServerUrl?: string;
  kubeConfig?: KubeConfig;
}

export interface ReadinessStep {
  readonly name: string;
  /** What to look at when this step does not pass. */
  readonly hint: string;
  /** Resolves when the step holds; throws (with the reason) while it does not yet. */
  check(context: ReadinessContext): Promise<void>;
}

function coreApi(context: ReadinessContext): CoreV1Api {
  if (!context.kubeConfig) throw new Error('no kubeconfig yet');
  return context.kubeConfig.makeApiClient(CoreV1Api);
}

function apiErrorText(error: unknown): string {
  const e = error as { code?: number; body?: unknown; message?: string; cause?: { message?: string; code?: string } };
  if (typeof e.code === 'number') {
    const body = typeof e.body === 'string' ? e.body : JSON.stringify(e.body);
    let message = body;
    try {
      message = (JSON.parse(body) as { message?: string }).message ?? body;
    } catch {}
    return `HTTP ${e.code}: ${message}`;
  }
  const cause = e.cause?.message ?? e.cause?.code;
  return cause ? `${e.message ?? String(error)} (${cause})` : (e.message ?? String(error));
}

export const k3sReadinessSteps: readonly ReadinessStep[] = [
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
      const text = await context.ssh.readFile(guestKubeconfigPath, { signal: context.signal });
      if (!text?.trim()) throw new Error(`${guestKubeconfigPath} does not exist yet`);
      const rewritten = rewriteKubeconfig(text, context.apiPort, context.contextName);
      context.kubeconfig = rewritten.kubeconfig;
      context.apiServerUrl = rewritten.apiServerUrl;
      context.kubeConfig = loadKubeConfig(rewritten.kubeconfig);
    },
  },
  {
    name: 'API /readyz ok',
    hint: 'the API server does not answer through the forwarded port: check that the guest firewall lets 6443 in',
    async check(context) {
      if (!context.kubeConfig) throw new Error('no kubeconfig yet');
      if (!(await apiReady(context.kubeConfig, context.signal))) throw new Error('/readyz did not answer ok');
    },
  },
  {
    name: 'node Ready',
    hint: 'the node has not become Ready: `k3s-vm kubectl describe nodes` shows why',
    async check(context) {
      const nodes = await coreApi(context).listNode();
      if (nodes.items.length === 0) throw new Error('no node has registered yet');
      const notReady = nodes.items.filter((node) => node.status?.conditions?.find((c) => c.type === 'Ready')?.status !== 'True');
      if (notReady.length > 0) {
        const node = notReady[0]!;
        const ready = node.status?.conditions?.find((c) => c.type === 'Ready');
        throw new Error(`node ${node.metadata?.name} is not Ready (${ready?.reason ?? 'no Ready condition'}${ready?.message ? `: ${ready.message}` : ''})`);
      }
    },
  },
  {
    name: 'default ServiceAccount exists',
    hint: "the controller manager has not created the default ServiceAccount; pods cannot be created until it does",
    async check(context) {
      await coreApi(context).readNamespacedServiceAccount({ name: 'default', namespace: 'default' });
    },
  },
];

export interface WaitForReadyOptions {
  readonly ssh: GuestSsh;
  readonly apiPort: number;
  readonly contextName?: string | undefined;
  readonly deadline: number;
  readonly steps?: readonly ReadinessStep[];
  readonly logger: Logger;
  readonly signal?: AbortSignal | undefined;
  /** A reason when the VM is gone (ends the wait at once). */
  readonly vmGone: () => string | undefined;
  readonly serialTail: () => Promise<string>;
  /** Number of the first step in messages (SSH is step 1 when booting). @default 1 */
  readonly firstStepNumber?: number;
  readonly totalSteps?: number;
}

export interface ReadyCluster {
  readonly kubeconfig: string;
  readonly apiServerUrl: string;
  /** Elapsed time of each step, in order. */
  readonly stepDurationsMs: ReadonlyArray<{ name: string; ms: number }>;
}

/**
 * Runs the steps in order, each retried with backoff capped at 150 ms so a step is noticed
 * soon after it becomes true, all under one deadline. The VM exiting aborts at once. On
 * failure the error names the step, its last error and the tail of the serial log.
 */
export async function waitForReady(options: WaitForReadyOptions): Promise<ReadyCluster> {
  const steps = options.steps ?? k3sReadinessSteps;
  const first = options.firstStepNumber ?? 1;
  const total = options.totalSteps ?? steps.length + first - 1;
  const controller = new AbortController();
  const remaining = Math.max(0, options.deadline - Date.now());
  const timer = setTimeout(() => controller.abort(new Error('deadline')), remaining);
  const onOuterAbort = () => controller.abort(options.signal?.reason);
  options.signal?.addEventListener('abort', onOuterAbort, { once: true });
  const context: ReadinessContext = { ssh: options.ssh, apiPort: options.apiPort, contextName: options.contextName, signal: controller.signal };
  const durations: Array<{ name: string; ms: number }> = [];
  try {
    for (const [index, step] of steps.entries()) {
      const number = first + index;
      const label = `step ${number} of ${total} "${step.name}"`;
      const stepStarted = Date.now();
      let lastError: unknown;
      let gone: string | undefined;
      try {
        await pRetry(
          async () => {
            gone = options.vmGone();
            if (gone) throw new AbortError(gone);
            await step.check(context);
          },
          {
            retries: Number.POSITIVE_INFINITY,
            minTimeout: 50,
            // The cap bounds how late a step that just became true is noticed.
            maxTimeout: 150,
            factor: 1.5,
            randomize: false,
            signal: controller.signal,
            onFailedAttempt: ({ error }) => {
              lastError = error;
              options.logger.debug(`${label}: ${apiErrorText(error)}`);
            },
          },
        );
      } catch (error) {
        if (options.signal?.aborted) throw options.signal.reason instanceof K3sVmError ? options.signal.reason : new K3sVmError('ABORTED', `aborted while waiting for ${label}`, { cause: options.signal.reason });
        const details = await options.serialTail();
        if (gone) {
          throw new K3sVmError('QEMU_EXITED', `the VM stopped while waiting for ${label}: ${options.vmGone() ?? gone}`, { details, hint: step.hint });
        }
        const seconds = Math.round((Date.now() - stepStarted) / 1000);
        throw new K3sVmError(
          'NOT_READY',
          `K3s not ready before the deadline (${label}, waited ${seconds} s); last error: ${lastError === undefined ? apiErrorText(error) : apiErrorText(lastError)}`,
          { details, hint: step.hint, cause: lastError ?? error },
        );
      }
      const ms = Date.now() - stepStarted;
      durations.push({ name: step.name, ms });
      options.logger.progress(`ready: ${label} (${(ms / 1000).toFixed(1)} s)`);
    }
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener('abort', onOuterAbort);
  }
  if (!context.kubeconfig || !context.apiServerUrl) {
    throw new K3sVmError('NOT_READY', 'the readiness steps finished without reading the kubeconfig');
  }
  return { kubeconfig: context.kubeconfig, apiServerUrl: context.apiServerUrl, stepDurationsMs: durations };
}
