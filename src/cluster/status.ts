// Status: what the instance is doing, derived from its files and process liveness (never stored).
import { stat } from 'node:fs/promises';
import type { ResolvedConfig } from '../config/options.js';
import { K3sVmError } from '../errors.js';
import { apiReady } from '../guest/kubeconfig.js';
import { buildPathOf } from '../nix/build-vm.js';
import { files } from '../state/files.js';
import { InstanceDir } from '../state/instance-dir.js';
import { liveLeases } from '../state/leases.js';
import { deriveStatus, type InstanceStatus, type RuntimeRecord } from '../state/status.js';
import type { ClusterOptions } from './options.js';
import { configOf } from './prepare.js';

/** How long status waits for /readyz. */
const statusProbeTimeoutMs = 3000;

export interface ClusterStatus {
  readonly config: ResolvedConfig;
  readonly state: InstanceStatus['state'];
  readonly reasons: readonly string[];
  readonly pid: number | undefined;
  readonly runtime: RuntimeRecord | undefined;
  /** Set while the VM runs and has a kubeconfig. */
  readonly kubeconfigPath: string | undefined;
  /** The VM's serial console log (it may not exist yet). */
  readonly serialLogPath: string;
  readonly buildPath: string | undefined;
  readonly diskBytes: number | undefined;
  readonly users: number;
  /** Whether /readyz answers through the forwarded port (only asked with probeApi). */
  readonly apiReady: boolean | undefined;
}

/** The instance's status, derived from its files and process liveness. */
export async function clusterStatus(options: ClusterOptions & { probeApi?: boolean } = {}): Promise<ClusterStatus> {
  const config = configOf(options);
  const dir = new InstanceDir(config.dir);
  const status = await deriveStatus(dir);
  const disk = await stat(dir.file(files.disk)).catch(() => undefined);
  const running = status.state === 'running';
  const kubeconfig = running ? await dir.readText(files.kubeconfig) : undefined;
  const ready = options.probeApi
    ? kubeconfig !== undefined && (await apiReady(kubeconfig, AbortSignal.timeout(statusProbeTimeoutMs)).catch(() => false))
    : undefined;
  return {
    config,
    state: status.state,
    reasons: status.reasons,
    pid: status.pid,
    runtime: running ? status.runtime : undefined,
    kubeconfigPath: kubeconfig === undefined ? undefined : dir.file(files.kubeconfig),
    serialLogPath: dir.file(files.serialLog),
    buildPath: buildPathOf(dir),
    diskBytes: disk ? disk.blocks * 512 : undefined,
    users: running ? (await liveLeases(dir)).length : 0,
    apiReady: ready,
  };
}

/** The status of a VM that must be running; NOT_RUNNING (with what to do) otherwise. */
export async function runningCluster(options: ClusterOptions = {}): Promise<ClusterStatus & { runtime: RuntimeRecord; pid: number }> {
  const status = await clusterStatus(options);
  if (status.state !== 'running' || !status.runtime || status.pid === undefined) {
    throw new K3sVmError('NOT_RUNNING', status.state === 'broken' ? `the VM is broken: ${status.reasons.join('; ')}` : 'the VM is not running', {
      hint: status.state === 'broken' ? 'clean up with: npx k3s-vm stop, then start again' : 'start it with: npx k3s-vm start',
    });
  }
  return { ...status, runtime: status.runtime, pid: status.pid };
}
