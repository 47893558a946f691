// The cluster API: everything the adapters (Vitest, Jest, the CLI) may use, and nothing else.
export { openCluster, startCluster } from './start.js';
export { contextAllowed, sweepDeadRuns } from './existing.js';
export {
  managedByLabel,
  runIdLabel,
  createdLabel,
  heartbeatAnnotation,
  keptAnnotation,
  newRunId,
  runLabels,
  runSelector,
  runNamespaceName,
} from './run-labels.js';
export { stopCluster, type StopClusterResult } from './stop.js';
export { clusterStatus, kubectlTarget, runningCluster, type ClusterStatus } from './status.js';
export { resetCluster } from './reset.js';
export { deleteClusterSnapshot } from './snapshot.js';
export { rewindCluster, rewindCluster as rewind, type RewindOptions, type RewindResult } from './rewind.js';
export { deleteNamedSnapshot, listSnapshots, saveNamedSnapshot, type SnapshotEntry } from './named-snapshots.js';
export { buildCluster, type BuildResult } from './build.js';
export { diagnose, type Check } from './doctor.js';
export { execInCluster, sshClientArgs } from './connect.js';
export {
  applyManifests,
  formatBytes as formatWorkloadBytes,
  importImages,
  listImages,
  loadWorkload,
  type ImageOutcome,
  type ManifestOutcome,
  type WorkloadOptions,
  type WorkloadResult,
} from './workload.js';
export { fieldManager } from '../kube/manifests.js';
export { stderrLogger, configOf as clusterConfig } from './prepare.js';
export type { Cluster, ClusterOptions, ConnectedCluster, StartOptions, StartedCluster, StartTimings } from './options.js';
export { clientNode } from '../kube/client-node.js';
export { flagDefinitions, flagHelpLines, optionOfFlag } from '../config/option-table.js';
export { setting } from '../config/names.js';
export { loadKubeConfig } from '../kube/kubeconfig.js';
export type { ReadinessStep, ReadinessContext } from '../readiness/engine.js';
export {
  k3sReadinessSteps,
  sshAnswers,
  k3sServiceActive,
  kubeconfigPresent,
  apiReadyz,
  nodeReady,
  apiDiscoveryComplete,
  defaultServiceAccount,
} from '../readiness/steps.js';
export type { GuestSsh } from '../guest/ssh.js';
// After the cluster: waits, logs, exec, port-forward and a failed test's diagnostics (src/kube).
export { waitFor, defaultWaitTimeoutMs, type WaitOptions } from '../kube/wait-for.js';
export {
  podRunning,
  podReady,
  podSucceeded,
  deploymentAvailable,
  jobComplete,
  jobFailed,
  deleted,
  exists,
  describeState,
  type Condition,
  type ConditionVerdict,
} from '../kube/conditions.js';
export { describeTarget, isClusterScopedKind, type ObjectTarget, type PodTarget } from '../kube/target.js';
export { execInPod, podLogs, type ExecOptions, type ExecResult, type PodLogsOptions } from '../kube/pods.js';
export { portForward, type PortForwardHandle, type PortForwardOptions } from '../kube/port-forward.js';
export { collectDiagnostics, type Diagnostics, type DiagnosticsOptions } from '../kube/diagnostics.js';
export type { KubeObject } from '../kube/watch.js';
