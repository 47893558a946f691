// k3s-vm: a real K3s cluster in a NixOS VM for test suites. The public library API.
export * from './cluster/index.js';
export { resolveConfig, findProjectRoot } from './config/resolve-config.js';
export type { Accel, K3sVmOptions, ResolvedConfig } from './config/options.js';
export { K3sVmError, isK3sVmError } from './errors.js';
export type { K3sVmErrorCode } from './errors.js';
export { createStreamLogger, silentLogger } from './log.js';
export type { Logger } from './log.js';
export { probeKvm } from './qemu/accel-probe.js';
