// What both test adapters (k3s-vm/vitest and k3s-vm/jest) export of the test helpers, written once.
export type { ProvidedCluster } from './session.js';
export type { BoundHelpers, NamespacedTarget, PodName } from './bound-helpers.js';
export {
  waitFor,
  podLogs,
  execInPod,
  portForward,
  podRunning,
  podReady,
  podSucceeded,
  deploymentAvailable,
  jobComplete,
  jobFailed,
  deleted,
  exists,
  type Condition,
  type ObjectTarget,
  type PortForwardHandle,
} from '../cluster/index.js';
