// The cluster API: everything the adapters (Vitest, Jest, the CLI) may use, and nothing else.
export { startCluster } from './start.js';
export { stopCluster, type StopClusterResult } from './stop.js';
export { clusterStatus, runningCluster, type ClusterStatus } from './status.js';
export { resetCluster } from './reset.js';
export { buildCluster, type BuildResult } from './build.js';
export { diagnose, type Check } from './doctor.js';
export { execInCluster, sshClientArgs } from './connect.js';
export { stderrLogger } from './prepare.js';
export type { ClusterOptions, StartOptions, StartedCluster, StartTimings } from './options.js';
export { flagDefinitions, flagHelpLines, optionOfFlag } from '../config/option-table.js';
export { loadKubeConfig } from '../guest/kubeconfig.js';
export { k3sReadinessSteps, type ReadinessStep, type ReadinessContext } from '../guest/readiness.js';
export type { GuestSsh } from '../guest/ssh.js';
