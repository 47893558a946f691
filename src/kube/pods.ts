// Pods as the helpers meet them: found (or an error saying what the namespace has instead), their containers, logs and exec.
import { PassThrough, Readable } from 'node:stream';
import type { KubeConfig, V1Pod, V1Status } from '@kubernetes/client-node';
import { abortError, K3sVmError } from '../errors.js';
import { apiErrorText } from './kubeconfig.js';
import { clientNode } from './client-node.js';
import { describeState } from './conditions.js';
import { checkTarget, describeTarget, type PodTarget } from './target.js';

/** A checked Pod reference. */
function podRef(pod: PodTarget): { name: string; namespace: string } {
  const checked = checkTarget({ ...pod, kind: pod.kind ?? 'Pod' });
  if (checked.kind !== 'Pod')
    throw new K3sVmError('TARGET_INVALID', `${describeTarget(checked)} is not a Pod`, { hint: "pass { kind: 'Pod', name, namespace }" });
  return { name: checked.name, namespace: checked.namespace! };
}

/**
 * Reads a Pod; a Pod that does not exist is an OBJECT_NOT_FOUND error naming it and the Pods
 * its namespace has instead.
 */
export async function readPod(kubeConfig: KubeConfig, pod: PodTarget): Promise<V1Pod> {
  const { name, namespace } = podRef(pod);
  const core = kubeConfig.makeApiClient(clientNode().CoreV1Api);
  try {
    return await core.readNamespacedPod({ name, namespace });
  } catch (error) {
    if ((error as { code?: number }).code !== 404)
      throw new K3sVmError('KUBE_REQUEST_FAILED', `reading Pod ${namespace}/${name} failed: ${apiErrorText(error)}`, { cause: error });
    const others = await core
      .listNamespacedPod({ namespace, limit: 20 })
      .then((list) => list.items.map((p) => p.metadata?.name ?? '?'))
      .catch(() => undefined);
    const instead =
      others === undefined ? '' : others.length ? `; the namespace has the pods ${others.join(', ')}` : '; the namespace has no pods';
    throw new K3sVmError('OBJECT_NOT_FOUND', `Pod ${namespace}/${name} does not exist${instead}`, {
      cause: error,
      hint: 'check the name and namespace, or wait for the Pod first (waitFor with podReady)',
    });
  }
}

/** The names of a Pod's containers, app containers first, then init and ephemeral ones. */
export function containerNames(pod: V1Pod): { app: string[]; init: string[]; ephemeral: string[] } {
  return {
    app: (pod.spec?.containers ?? []).map((c) => c.name),
    init: (pod.spec?.initContainers ?? []).map((c) => c.name),
    ephemeral: (pod.spec?.ephemeralContainers ?? []).map((c) => c.name),
  };
}

/**
 * The container to use: the one named (which the Pod must have), else the Pod's
 * `kubectl.kubernetes.io/default-container`, else its only container. An error names the Pod
 * and the containers it has.
 */
export function chooseContainer(pod: V1Pod, container: string | undefined): string {
  const names = containerNames(pod);
  const all = [...names.app, ...names.init, ...names.ephemeral];
  const podName = `Pod ${pod.metadata?.namespace}/${pod.metadata?.name}`;
  const has = () =>
    `it has the container${names.app.length === 1 ? '' : 's'} ${names.app.join(', ')}` +
    (names.init.length ? ` and the init container${names.init.length === 1 ? '' : 's'} ${names.init.join(', ')}` : '') +
    (names.ephemeral.length ? ` and the ephemeral ${names.ephemeral.join(', ')}` : '');
  if (container !== undefined) {
    if (all.includes(container)) return container;
    throw new K3sVmError('OBJECT_NOT_FOUND', `${podName} has no container ${container}; ${has()}`, {
      hint: 'pass one of those as { container }',
    });
  }
  const preferred = pod.metadata?.annotations?.['kubectl.kubernetes.io/default-container'];
  if (preferred && all.includes(preferred)) return preferred;
  if (names.app.length === 1) return names.app[0]!;
  throw new K3sVmError('TARGET_INVALID', `${podName} has more than one container: name one; ${has()}`, { hint: 'pass { container: "…" }' });
}

export interface PodLogsOptions {
  /** The container; may be left out for a Pod of one container. */
  readonly container?: string | undefined;
  /** Only lines from the last this many seconds. */
  readonly sinceSeconds?: number | undefined;
  /** Only the last this many lines. */
  readonly tailLines?: number | undefined;
  /** The log of the container's previous run (after a restart). */
  readonly previous?: boolean | undefined;
  /** At most this many bytes (the server may cut a line). */
  readonly limitBytes?: number | undefined;
}

/**
 * The log of one container of a Pod, as text. A Pod that does not exist, a container it does
 * not have, or a container that has not started gets an error naming the Pod and what it has.
 *
 * @example const text = await podLogs(kubeConfig, { name: 'web', namespace }, { tailLines: 20 });
 */
export async function podLogs(kubeConfig: KubeConfig, pod: PodTarget, options: PodLogsOptions = {}): Promise<string> {
  const found = await readPod(kubeConfig, pod);
  const container = chooseContainer(found, options.container);
  const { name, namespace } = podRef(pod);
  try {
    return await kubeConfig.makeApiClient(clientNode().CoreV1Api).readNamespacedPodLog({
      name,
      namespace,
      container,
      ...(options.sinceSeconds !== undefined ? { sinceSeconds: options.sinceSeconds } : {}),
      ...(options.tailLines !== undefined ? { tailLines: options.tailLines } : {}),
      ...(options.previous !== undefined ? { previous: options.previous } : {}),
      ...(options.limitBytes !== undefined ? { limitBytes: options.limitBytes } : {}),
    });
  } catch (error) {
    throw new K3sVmError(
      'KUBE_REQUEST_FAILED',
      `the log of container ${container} of Pod ${namespace}/${name} could not be read: ${apiErrorText(error)}`,
      {
        cause: error,
        details: `the Pod: ${describeState(found as never)}`,
        hint: 'a container has a log once it has started: wait for the Pod first (waitFor with podRunning)',
      },
    );
  }
}

export interface ExecOptions {
  /** The container; may be left out for a Pod of one container. */
  readonly container?: string | undefined;
  /** What the command reads on its standard input (closed at its end); without it, stdin is not attached. */
  readonly stdin?: string | Uint8Array | undefined;
  /** Ends the command's session (the command itself may go on in the container). */
  readonly signal?: AbortSignal | undefined;
}

export interface ExecResult {
  readonly stdout: string;
  readonly stderr: string;
  /** The command's own exit code. */
  readonly exitCode: number;
}

/** The exit code a finished exec's status carries: 0 on Success, the NonZeroExitCode cause otherwise; undefined when it did not run. */
export function exitCodeOf(status: V1Status): number | undefined {
  if (status.status === 'Success') return 0;
  if (status.reason !== 'NonZeroExitCode') return undefined;
  const cause = status.details?.causes?.find((c) => c.reason === 'ExitCode');
  const code = cause?.message === undefined ? Number.NaN : Number(cause.message);
  return Number.isInteger(code) ? code : undefined;
}

/**
 * Runs a command in a Pod's container through the API server (as `kubectl exec` does): argv as
 * given, no shell in between. Resolves with its output and its own exit code, non-zero ones
 * included; rejects (EXEC_FAILED) only when the command could not run, with the reason.
 *
 * @example const { stdout, exitCode } = await execInPod(kubeConfig, { name: 'web', namespace }, ['cat', '/etc/hostname']);
 */
export async function execInPod(
  kubeConfig: KubeConfig,
  pod: PodTarget,
  command: readonly string[],
  options: ExecOptions = {},
): Promise<ExecResult> {
  if (!Array.isArray(command) || command.length === 0 || command.some((word) => typeof word !== 'string'))
    throw new K3sVmError('TARGET_INVALID', `execInPod needs a command as a non-empty array of strings, not ${JSON.stringify(command)}`, {
      hint: "argv as given, no shell: ['sh', '-c', 'echo $HOME'] when a shell is wanted",
    });
  const { signal } = options;
  if (signal?.aborted) throw abortError(signal);
  const found = await readPod(kubeConfig, pod);
  const container = chooseContainer(found, options.container);
  const { name, namespace } = podRef(pod);
  const where = `container ${container} of Pod ${namespace}/${name}`;
  if (found.status?.phase !== 'Running')
    throw new K3sVmError(
      'EXEC_FAILED',
      `cannot run ${JSON.stringify(command)} in ${where}: the Pod is not running (${describeState(found as never)})`,
      {
        hint: 'wait for the Pod first: waitFor(kubeConfig, pod, podRunning)',
      },
    );
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  const collect = (into: Buffer[]) => {
    const stream = new PassThrough();
    stream.on('data', (chunk: Buffer) => into.push(chunk));
    return stream;
  };
  const stdin = options.stdin === undefined ? null : Readable.from([Buffer.from(options.stdin)]);
  return new Promise<ExecResult>((resolve, reject) => {
    let settled = false;
    let socket: { close(): void; on(event: string, listener: (...args: unknown[]) => void): unknown } | undefined;
    const settle = (outcome: () => void) => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      outcome();
    };
    const onAbort = () => {
      socket?.close();
      settle(() => reject(abortError(signal!)));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    const onStatus = (status: V1Status) => {
      const exitCode = exitCodeOf(status);
      settle(() => {
        if (exitCode !== undefined)
          resolve({ stdout: Buffer.concat(stdout).toString('utf8'), stderr: Buffer.concat(stderr).toString('utf8'), exitCode });
        else
          reject(
            new K3sVmError(
              'EXEC_FAILED',
              `${JSON.stringify(command)} did not run in ${where}: ${status.message ?? status.reason ?? 'no reason given'}`,
              {
                hint: 'the command is run without a shell: its first word must be an executable in the container',
              },
            ),
          );
      });
    };
    new (clientNode().Exec)(kubeConfig)
      .exec(namespace, name, container, [...command], collect(stdout), collect(stderr), stdin, false, onStatus)
      .then(
        (opened) => {
          socket = opened as unknown as typeof socket;
          if (settled) return opened.close();
          opened.on('close', () =>
            settle(() =>
              reject(
                new K3sVmError(
                  'EXEC_FAILED',
                  `the session of ${JSON.stringify(command)} in ${where} closed before the command's exit status arrived`,
                ),
              ),
            ),
          );
        },
        (error: unknown) =>
          settle(() =>
            reject(
              new K3sVmError('EXEC_FAILED', `cannot run ${JSON.stringify(command)} in ${where}: ${apiErrorText(error)}`, {
                cause: error,
              }),
            ),
          ),
      );
  });
}
