// What marks a namespace as k3s-vm's: the labels every run puts on what it creates, and nothing else is ever deleted.
import { randomBytes } from 'node:crypto';

/** Set on every namespace k3s-vm creates; sweeping only ever looks at namespaces that carry it. */
export const managedByLabel = { key: 'app.kubernetes.io/managed-by', value: 'k3s-vm' } as const;
/** The run that created the namespace. */
export const runIdLabel = 'k3s-vm/run-id';
/** When the namespace was created (seconds since the epoch: a label value cannot hold a timestamp's colons). */
export const createdLabel = 'k3s-vm/created';
/** On a run's own namespace on an existing cluster: the run's last sign of life (ISO time). */
export const heartbeatAnnotation = 'k3s-vm/heartbeat';
/** On a failed test's namespace kept for inspection: its run's teardown leaves it (a later sweep of dead runs still deletes it). */
export const keptAnnotation = 'k3s-vm/kept-after-failure';

/** A new run id: sortable by start time, unique, and a valid label value. */
export function newRunId(now = Date.now()): string {
  return `r${Math.floor(now / 1000).toString(36)}-${randomBytes(4).toString('hex')}`;
}

/** The labels of a namespace created by the run `runId`. */
export function runLabels(runId: string, now = Date.now()): Record<string, string> {
  return { [managedByLabel.key]: managedByLabel.value, [runIdLabel]: runId, [createdLabel]: String(Math.floor(now / 1000)) };
}

/** The label selector of a run's namespaces, or of every run's. */
export function runSelector(runId?: string): string {
  return `${managedByLabel.key}=${managedByLabel.value},${runId === undefined ? runIdLabel : `${runIdLabel}=${runId}`}`;
}

/** The namespace that holds a run's heartbeat on an existing cluster. */
export function runNamespaceName(runId: string): string {
  return `k3s-vm-run-${runId}`;
}
