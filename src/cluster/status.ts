// Status: what the instance is doing, derived from its files and process liveness (never stored).
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ResolvedConfig } from '../config/options.js';
import { K3sVmError } from '../errors.js';
import { apiReady } from '../kube/kubeconfig.js';
import { buildPathOf } from '../nix/build-vm.js';
import { files } from '../state/files.js';
import { InstanceDir, stateIoError } from '../state/instance-dir.js';
import { liveLeases } from '../state/leases.js';
import { deriveStatus, type InstanceStatus, type RuntimeRecord } from '../state/status.js';
import type { ClusterOptions } from './options.js';
import { selectContext } from './existing.js';
import { configOf } from './prepare.js';
import { environment } from '../config/resolve-config.js';
import { snapshotStatus } from './snapshot.js';

/** How long status waits for /readyz. */
const statusProbeTimeoutMs = 3000;

export interface ClusterStatus {
  readonly config: ResolvedConfig;
  /** Set when K3S_VM_KUBECONFIG names an existing cluster: its context and API server (no VM fields are set then). */
  readonly existing: { readonly context: string; readonly server: string } | undefined;
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
  /** The saved ready-state snapshot (inside the disk), if there is one. */
  readonly snapshot: { readonly savedAt: string; readonly vmStateBytes: number; readonly storePath: string } | undefined;
  readonly users: number;
  /** Whether /readyz answers through the forwarded port (only asked with probeApi). */
  readonly apiReady: boolean | undefined;
}

/** The instance's status, derived from its files and process liveness. */
export async function clusterStatus(options: ClusterOptions & { probeApi?: boolean } = {}): Promise<ClusterStatus> {
  const config = configOf(options);
  if (config.kubeconfig) return existingClusterStatus(config);
  const dir = new InstanceDir(config.dir, config.names.dir);
  const status = await deriveStatus(dir);
  const disk = await stat(dir.file(files.disk)).catch(() => undefined);
  const running = status.state === 'running';
  const kubeconfig = running ? await dir.readText(files.kubeconfig) : undefined;
  const ready = options.probeApi
    ? kubeconfig !== undefined && (await apiReady(kubeconfig, AbortSignal.timeout(statusProbeTimeoutMs)).catch(() => false))
    : undefined;
  return {
    config,
    existing: undefined,
    state: status.state,
    reasons: status.reasons,
    pid: status.pid,
    runtime: running ? status.runtime : undefined,
    kubeconfigPath: kubeconfig === undefined ? undefined : dir.file(files.kubeconfig),
    serialLogPath: dir.file(files.serialLog),
    buildPath: buildPathOf(dir),
    diskBytes: disk ? disk.blocks * 512 : undefined,
    snapshot: await snapshotStatus(dir, environment(options.env)['PATH']).then(
      (found) => found && { savedAt: found.record.savedAt, vmStateBytes: found.vmStateBytes, storePath: found.record.key.storePath },
    ),
    users: running ? (await liveLeases(dir)).length : 0,
    apiReady: ready,
  };
}

/** The status of a VM that must be running; NOT_RUNNING (with what to do) otherwise. */
export async function runningCluster(options: ClusterOptions = {}): Promise<ClusterStatus & { runtime: RuntimeRecord; pid: number }> {
  const status = await clusterStatus(options);
  if (status.existing) {
    throw new K3sVmError(
      'NOT_RUNNING',
      `there is no VM: ${status.config.names.kubeconfig} names an existing cluster (context "${status.existing.context}")`,
      {
        hint: `leave ${status.config.names.kubeconfig} out for the VM; k3s-vm kubectl and status work with the existing cluster`,
      },
    );
  }
  if (status.state !== 'running' || !status.runtime || status.pid === undefined) {
    throw new K3sVmError(
      'NOT_RUNNING',
      status.state === 'broken' ? `the VM is broken: ${status.reasons.join('; ')}` : 'the VM is not running',
      {
        hint: status.state === 'broken' ? 'clean up with: npx k3s-vm stop, then start again' : 'start it with: npx k3s-vm start',
      },
    );
  }
  return { ...status, runtime: status.runtime, pid: status.pid };
}

/** An existing cluster is "running" when its API server answers /readyz; there is nothing else to derive. */
async function existingClusterStatus(config: ResolvedConfig): Promise<ClusterStatus> {
  const selected = selectContext(config);
  const ready = await apiReady(selected.kubeConfig, AbortSignal.timeout(statusProbeTimeoutMs)).catch(() => false);
  return {
    config,
    existing: { context: selected.context, server: selected.server },
    state: ready ? 'running' : 'broken',
    reasons: ready ? [] : [`the API server ${selected.server} does not answer /readyz`],
    pid: undefined,
    runtime: undefined,
    kubeconfigPath: config.kubeconfig,
    serialLogPath: '',
    buildPath: undefined,
    diskBytes: undefined,
    snapshot: undefined,
    users: 0,
    apiReady: ready,
  };
}

/** How kubectl reaches the cluster: a kubeconfig of the one cluster it may reach, and what to do once kubectl is done. */
export interface KubectlTarget {
  readonly kubeconfigPath: string;
  readonly args: string[];
  /** Removes what was written for this kubectl run (the existing cluster's one-context kubeconfig). */
  readonly cleanup: () => Promise<void>;
}

/**
 * How kubectl reaches the cluster. For an existing cluster it gets a kubeconfig of the allowed
 * context alone, written 0600 into a private folder of its own: never the user's file, so that
 * `--context` cannot reach a context the allow-list refuses, `config view --raw` shows no other
 * credentials and `config use-context` cannot rewrite the user's file.
 */
export async function kubectlTarget(options: ClusterOptions = {}): Promise<KubectlTarget> {
  const config = configOf(options);
  if (config.kubeconfig) {
    const selected = selectContext(config);
    const folder = await mkdtemp(join(tmpdir(), 'k3s-vm-kubectl-'));
    const kubeconfigPath = join(folder, 'kubeconfig');
    const cleanup = () => rm(folder, { recursive: true, force: true });
    try {
      await writeFile(kubeconfigPath, `${selected.kubeConfig.exportConfig()}\n`, { mode: 0o600, flag: 'wx' });
    } catch (error) {
      await cleanup();
      throw stateIoError(error, kubeconfigPath, 'write', config.names.dir);
    }
    return { kubeconfigPath, args: [], cleanup };
  }
  const status = await runningCluster(options);
  if (!status.kubeconfigPath) {
    throw new K3sVmError('NOT_READY', 'the VM runs but has no kubeconfig yet (it did not become ready)', {
      hint: 'k3s-vm logs shows the serial console',
    });
  }
  return { kubeconfigPath: status.kubeconfigPath, args: [], cleanup: async () => undefined };
}
