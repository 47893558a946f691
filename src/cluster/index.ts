// The cluster API: everything the adapters (Vitest, Jest, the CLI) may use, and nothing else.
export { openCluster, startCluster } from './start.js';
export { contextAllowed, sweepDeadRuns } from './existing.js';
export {
  managedByLabel,
  runIdLabel,
  createdLabel,
  heartbeatAnnotation,
  newRunId,
  runLabels,
  runSelector,
  runNamespaceName,
} from './run-labels.js';
export { stopCluster, type StopClusterResult } from './stop.js';
export { clusterStatus, kubectlTarget, runningCluster, type ClusterStatus } from './status.js';
export { resetCluster } from './reset.js';
export { deleteClusterSnapshot } from './snapshot.js';
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
export { fieldManager } from '../guest/manifests.js';
export { stderrLogger } from './prepare.js';
export type { Cluster, ClusterOptions, ConnectedCluster, StartOptions, StartedCluster, StartTimings } from './options.js';
export { clientNode } from '../guest/client-node.js';
export { flagDefinitions, flagHelpLines, optionOfFlag } from '../config/option-table.js';
export { loadKubeConfig } from '../guest/kubeconfig.js';
export { k3sReadinessSteps, type ReadinessStep, type ReadinessContext } from '../guest/readiness.js';
export type { GuestSsh } from '../guest/ssh.js';
