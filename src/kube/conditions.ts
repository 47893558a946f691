// Conditions a wait can end on, as values (e2e-framework's shape), and how an object's state reads in a message.
import type { KubeObject } from './watch.js';

/**
 * What a condition says of the object as last seen: `true` (done), `false` (not yet), or
 * `{ failed }` — it can never hold any more (a Job that failed while one waits for it to
 * complete), which ends the wait at once with that reason.
 */
export type ConditionVerdict = boolean | { readonly failed: string };

/**
 * A condition: a function of the object (undefined while it does not exist), with a
 * description for messages ("Running", "rolled out"). A plain function is a condition too.
 */
export interface Condition<T = KubeObject> {
  (object: T | undefined): ConditionVerdict;
  /** What the condition waits for, as in "Pod ns/web is not <description> after 30 s". */
  readonly description?: string;
}

interface Status {
  readonly phase?: string;
  readonly conditions?: readonly {
    readonly type?: string;
    readonly status?: string;
    readonly reason?: string;
    readonly message?: string;
  }[];
  readonly [key: string]: unknown;
}

function statusOf(object: KubeObject | undefined): Status {
  return (object?.['status'] ?? {}) as Status;
}

function conditionOf(object: KubeObject | undefined, type: string) {
  return statusOf(object).conditions?.find((c) => c.type === type);
}

function described<T>(description: string, check: (object: T | undefined) => ConditionVerdict): Condition<T> {
  return Object.assign((object: T | undefined) => check(object), { description });
}

const terminalPhase = (object: KubeObject | undefined) => {
  const phase = statusOf(object).phase;
  return phase === 'Succeeded' || phase === 'Failed' ? phase : undefined;
};

/** A Pod whose phase is Running. Fails at once if the Pod has ended (Succeeded or Failed). */
export const podRunning: Condition = described('Running', (pod) => {
  if (statusOf(pod).phase === 'Running') return true;
  const ended = terminalPhase(pod);
  return ended ? { failed: `the Pod has ended (phase ${ended}) and cannot be Running again` } : false;
});

/** A Pod whose Ready condition is True. Fails at once if the Pod has ended. */
export const podReady: Condition = described('Ready', (pod) => {
  if (conditionOf(pod, 'Ready')?.status === 'True') return true;
  const ended = terminalPhase(pod);
  return ended ? { failed: `the Pod has ended (phase ${ended}) and cannot become Ready` } : false;
});

/** A Pod whose phase is Succeeded (all its containers exited 0). Fails at once if it Failed. */
export const podSucceeded: Condition = described('Succeeded', (pod) => {
  const phase = statusOf(pod).phase;
  if (phase === 'Succeeded') return true;
  return phase === 'Failed' ? { failed: 'the Pod Failed' } : false;
});

interface DeploymentLike {
  readonly metadata?: { readonly generation?: number };
  readonly spec?: { readonly replicas?: number };
  readonly status?: Status & {
    readonly observedGeneration?: number;
    readonly replicas?: number;
    readonly updatedReplicas?: number;
    readonly availableReplicas?: number;
  };
}

/**
 * A Deployment rolled out, as `kubectl rollout status` judges it: the controller has seen the
 * latest spec (observedGeneration ≥ generation), every replica is updated and available, and
 * no old replica is left. Fails at once when the rollout exceeded its progress deadline.
 */
export const deploymentAvailable: Condition = described('rolled out', (object) => {
  const deployment = object as DeploymentLike | undefined;
  if (!deployment) return false;
  const status = deployment.status ?? {};
  const generation = deployment.metadata?.generation ?? 0;
  if ((status.observedGeneration ?? 0) < generation) return false;
  const progressing = status.conditions?.find((c) => c.type === 'Progressing');
  if (progressing?.reason === 'ProgressDeadlineExceeded')
    return { failed: `the rollout exceeded its progress deadline${progressing.message ? `: ${progressing.message}` : ''}` };
  const wanted = deployment.spec?.replicas ?? 1;
  const updated = status.updatedReplicas ?? 0;
  return updated >= wanted && (status.replicas ?? 0) <= updated && (status.availableReplicas ?? 0) >= updated;
});

/** A Job with the condition Complete=True. Fails at once if the Job Failed. */
export const jobComplete: Condition = described('Complete', (job) => {
  if (conditionOf(job, 'Complete')?.status === 'True') return true;
  const failed = conditionOf(job, 'Failed');
  return failed?.status === 'True'
    ? { failed: `the Job Failed${failed.reason ? ` (${failed.reason}${failed.message ? `: ${failed.message}` : ''})` : ''}` }
    : false;
});

/** A Job with the condition Failed=True. Fails at once if the Job completed instead. */
export const jobFailed: Condition = described('Failed', (job) => {
  if (conditionOf(job, 'Failed')?.status === 'True') return true;
  return conditionOf(job, 'Complete')?.status === 'True' ? { failed: 'the Job completed instead' } : false;
});

/** The object no longer exists (or never did). */
export const deleted: Condition = described('deleted', (object) => object === undefined);

/** The object exists (a namespace's `default` ServiceAccount, a Secret an operator writes). */
export const exists: Condition = described('created', (object) => object !== undefined);

/** A condition's description for messages: its own, a function's name, or "as the condition requires". */
export function describeCondition(condition: Condition<never>): string {
  if (condition.description) return condition.description;
  return condition.name ? `as ${condition.name} requires` : 'as the condition requires';
}

/**
 * One line of what an object looked like: its phase, conditions, replica counts and each
 * container's state, whichever it has. Used by wait errors and diagnostics.
 */
export function describeState(object: KubeObject | undefined): string {
  if (!object) return 'it does not exist';
  const status = statusOf(object);
  const parts: string[] = [];
  if (object.metadata?.deletionTimestamp) parts.push('being deleted');
  if (status.phase) parts.push(`phase ${status.phase}`);
  const counts = ['replicas', 'updatedReplicas', 'readyReplicas', 'availableReplicas', 'active', 'succeeded', 'failed']
    .filter((key) => typeof status[key] === 'number')
    .map((key) => `${key} ${status[key] as number}`);
  if (counts.length) parts.push(counts.join(', '));
  if (status.conditions?.length) {
    const conditions = status.conditions.map(
      (c) => `${c.type}=${c.status}${c.reason ? ` (${c.reason}${c.message ? `: ${c.message}` : ''})` : c.message ? ` (${c.message})` : ''}`,
    );
    parts.push(`conditions ${conditions.join(', ')}`);
  }
  const containers = containerStates(object);
  if (containers.length) parts.push(`containers ${containers.join(', ')}`);
  return parts.length ? parts.join('; ') : 'it has no status yet';
}

interface ContainerStatus {
  readonly name?: string;
  readonly ready?: boolean;
  readonly restartCount?: number;
  readonly state?: {
    readonly waiting?: { readonly reason?: string; readonly message?: string };
    readonly running?: unknown;
    readonly terminated?: { readonly exitCode?: number; readonly reason?: string; readonly message?: string };
  };
}

/** `app running, ready` / `app waiting (ErrImageNeverPull: …)` / `app terminated (exit 1, Error)` for each container status. */
export function containerStates(object: KubeObject | undefined): string[] {
  const status = statusOf(object);
  const all = [
    ...((status['initContainerStatuses'] ?? []) as ContainerStatus[]),
    ...((status['containerStatuses'] ?? []) as ContainerStatus[]),
  ];
  return all.map((c) => {
    const restarts = c.restartCount ? `, ${c.restartCount} restarts` : '';
    if (c.state?.waiting) {
      const { reason, message } = c.state.waiting;
      return `${c.name} waiting${reason ? ` (${reason}${message ? `: ${message}` : ''})` : ''}${restarts}`;
    }
    if (c.state?.terminated) {
      const { exitCode, reason } = c.state.terminated;
      return `${c.name} terminated (exit ${exitCode}${reason ? `, ${reason}` : ''})${restarts}`;
    }
    if (c.state?.running) return `${c.name} running${c.ready ? ', ready' : ', not ready'}${restarts}`;
    return `${c.name} (no state)`;
  });
}
