// The test helpers bound to one kube config and namespace, as the Vitest fixtures and the Jest namespace hand them out.
import type { KubeConfig } from '@kubernetes/client-node';
import {
  execInPod,
  isClusterScopedKind,
  podLogs,
  portForward,
  waitFor,
  type Condition,
  type ExecOptions,
  type ExecResult,
  type KubeObject,
  type ObjectTarget,
  type PodLogsOptions,
  type PortForwardHandle,
  type PortForwardOptions,
  type WaitOptions,
} from '../cluster/index.js';

/** A target in the test's namespace: the namespace may be left out. */
export type NamespacedTarget = Omit<ObjectTarget, 'namespace'> & { readonly namespace?: string | undefined };

/** A Pod of the test's namespace by name, or a Pod reference. */
export type PodName = string | { readonly name: string; readonly namespace?: string | undefined };

/** The helpers with the test's kube config and namespace filled in. */
export interface BoundHelpers {
  /** `execInPod` in the test's namespace: `exec('web', ['cat', '/etc/hostname'])`. */
  exec(pod: PodName, command: readonly string[], options?: ExecOptions): Promise<ExecResult>;
  /** `podLogs` in the test's namespace: `logs('web', { tailLines: 20 })`. */
  logs(pod: PodName, options?: PodLogsOptions): Promise<string>;
  /** `portForward` in the test's namespace, closed at the test's teardown: `portForward({ kind: 'Service', name: 'web' }, 80)`. */
  portForward(target: NamespacedTarget, port: number | string, options?: PortForwardOptions): Promise<PortForwardHandle>;
  /** `waitFor` in the test's namespace, aborted when the test times out: `waitFor({ kind: 'Pod', name: 'web' }, podReady)`. */
  waitFor<T = KubeObject>(target: NamespacedTarget, condition: Condition<T>, options?: WaitOptions): Promise<T | undefined>;
}

/** Helpers bound to a kube config and namespace; `signal` is the default of every wait and exec; each forward is handed to `track`. */
export function bindHelpers(
  kubeConfig: KubeConfig,
  namespace: string,
  options: { readonly signal?: AbortSignal; readonly track?: (forward: PortForwardHandle) => void } = {},
): BoundHelpers {
  const pod = (ref: PodName) =>
    typeof ref === 'string' ? { name: ref, namespace } : { name: ref.name, namespace: ref.namespace ?? namespace };
  const inNamespace = (target: NamespacedTarget): ObjectTarget =>
    target.namespace !== undefined || isClusterScopedKind(target.kind) ? target : { ...target, namespace };
  const withSignal = <O extends { signal?: AbortSignal | undefined }>(given: O | undefined): O =>
    ({ ...(options.signal ? { signal: options.signal } : {}), ...given }) as O;
  return {
    exec: (ref, command, given) => execInPod(kubeConfig, pod(ref), command, withSignal(given)),
    logs: (ref, given) => podLogs(kubeConfig, pod(ref), given),
    portForward: async (target, port, given) => {
      const forward = await portForward(kubeConfig, inNamespace(target), port, withSignal(given));
      options.track?.(forward);
      return forward;
    },
    waitFor: (target, condition, given) => waitFor(kubeConfig, inNamespace(target), condition, withSignal(given)),
  };
}
