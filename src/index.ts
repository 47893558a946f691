// k3s-vm: a real K3s cluster in a NixOS VM for test suites. The public library API: what a
// user of the library needs, each name documented in docs/api.md (test/house/public-api.test.ts
// lists it). The adapters use src/cluster/index.ts, which holds more.

// The cluster: start or attach, an existing cluster, stop, status, reset, build, doctor.
export { startCluster, openCluster, stopCluster, clusterStatus, resetCluster, buildCluster, diagnose } from './cluster/index.js';
// Snapshots and rewind.
export { rewind, listSnapshots, saveNamedSnapshot, deleteNamedSnapshot, deleteClusterSnapshot } from './cluster/index.js';
// The workload: images and manifests.
export { loadWorkload, importImages, applyManifests } from './cluster/index.js';
// Talking to the cluster: waits and their conditions, logs, exec, port-forward (the helpers the
// test adapters export too, listed once), the kubeconfig and a namespace's diagnostics.
export * from './adapters/helper-exports.js';
export { loadKubeConfig, collectDiagnostics } from './cluster/index.js';
// Readiness: the steps a start waits for, to compose a list of one's own (the readiness option).
export {
  k3sReadinessSteps,
  sshAnswers,
  k3sServiceActive,
  kubeconfigPresent,
  apiReadyz,
  nodeReady,
  apiDiscoveryComplete,
  defaultServiceAccount,
} from './cluster/index.js';
// An existing cluster: whether a context is allowed, and the sweep of dead runs.
export { contextAllowed, sweepDeadRuns } from './cluster/index.js';
export type * from './cluster/index.js';
export { resolveConfig } from './config/resolve-config.js';
export type { Accel, K3sVmOptions, ResolvedConfig } from './config/options.js';
export { K3sVmError, isK3sVmError } from './errors.js';
export type { K3sVmErrorCode } from './errors.js';
export { createStreamLogger, silentLogger } from './log.js';
export type { Logger } from './log.js';
export { probeKvm } from './qemu/accel-probe.js';
