// Readiness after a snapshot restore: "node Ready" believes the node's Lease as well as its Ready condition.
import { clientNode } from '../kube/client-node.js';
import { apiErrorText } from '../kube/kubeconfig.js';
import type { ReadinessContext, ReadinessStep } from './readiness.js';

/** Clock difference between host and guest that a fresh heartbeat may still show (as in readiness.ts). */
const clockSkewMs = 2000;

function timeOf(value: unknown): number | undefined {
  if (value instanceof Date) return value.getTime();
  if (typeof value !== 'string') return undefined;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? undefined : ms;
}

/**
 * The "node Ready" step for a restored VM: the node's Ready condition must be True, and its
 * heartbeat newer than the restore (restoredAt), which either of two shows:
 *  - the Ready condition's lastHeartbeatTime (what the step of a boot looks at); or
 *  - the node's Lease in kube-node-lease (spec.renewTime).
 * After a restore the kubelet patches its status only when something changed or once
 * nodeStatusReportFrequency (5 min) has passed on its monotonic clock, which the restore did
 * not advance (kubernetes pkg/kubelet/kubelet_node_status.go, tryUpdateNodeStatus); its
 * Lease is renewed every 10 s with the wall clock's time (component-helpers
 * apimachinery/lease/controller.go, newLease), so the Lease is the heartbeat that shows a
 * kubelet alive after the restore within seconds, where the condition could take minutes.
 */
export function nodeReadyAfterRestore(restoredAt: number): ReadinessStep {
  return {
    name: 'node Ready',
    hint: 'the restored node has not reported since the restore: `k3s-vm kubectl get lease -n kube-node-lease` and `describe nodes` show its last heartbeats',
    async check(context: ReadinessContext) {
      const kubeConfig = context.kubeConfig;
      if (!kubeConfig) throw new Error('no kubeconfig yet');
      const core = kubeConfig.makeApiClient(clientNode().CoreV1Api);
      const nodes = context.nodeName === undefined ? (await core.listNode()).items : [await core.readNode({ name: context.nodeName })];
      if (nodes.length === 0) throw new Error('no node has registered yet');
      const coordination = kubeConfig.makeApiClient(clientNode().CoordinationV1Api);
      for (const node of nodes) {
        const name = node.metadata?.name ?? '(unnamed)';
        const ready = node.status?.conditions?.find((condition) => condition.type === 'Ready');
        if (ready?.status !== 'True')
          throw new Error(`node ${name} is not Ready (${ready?.reason ?? ready?.status ?? 'no Ready condition'})`);
        const fresh = (at: number | undefined) => at !== undefined && at + 999 >= restoredAt - clockSkewMs;
        const reportedAt = timeOf(ready.lastHeartbeatTime) ?? timeOf(ready.lastTransitionTime);
        if (fresh(reportedAt)) continue;
        let renewedAt: number | undefined;
        let leaseProblem = '';
        try {
          const lease = await coordination.readNamespacedLease({ name, namespace: 'kube-node-lease' });
          renewedAt = timeOf(lease.spec?.renewTime);
        } catch (error) {
          leaseProblem = ` (its lease could not be read: ${apiErrorText(error)})`;
        }
        if (fresh(renewedAt)) continue;
        const when = (at: number | undefined) => (at === undefined ? 'never' : new Date(at).toISOString());
        throw new Error(
          `node ${name} is Ready as last reported ${when(reportedAt)}, its lease last renewed ${when(renewedAt)}${leaseProblem}, ` +
            `both before the restore (${new Date(restoredAt).toISOString()}); waiting for the kubelet's next heartbeat`,
        );
      }
    },
  };
}

/** The readiness steps of a restore: the given ones with "node Ready" replaced by nodeReadyAfterRestore. */
export function restoreReadinessSteps(steps: readonly ReadinessStep[], restoredAt: number): readonly ReadinessStep[] {
  return steps.map((step) => (step.name === 'node Ready' ? nodeReadyAfterRestore(restoredAt) : step));
}
