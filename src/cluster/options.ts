// The options and results of the lifecycle operations, shared by every file in this folder.
import type { KubeConfig } from '@kubernetes/client-node';
import type { FlagValues } from '../config/resolve-config.js';
import type { K3sVmOptions, ResolvedConfig } from '../config/options.js';
import type { ReadinessStep } from '../readiness/engine.js';
import type { GuestSsh } from '../guest/ssh.js';
import type { Logger } from '../log.js';
import type { RewindResult } from './rewind.js';

/** How the guest's clock was set after a load: QEMU's guest agent (no SSH handshake), or SSH when the guest has no agent. */
export type GuestClockBy = 'guest agent' | 'ssh';

/** Options of every lifecycle operation: the config options plus where to report and how to cancel. */
export interface ClusterOptions extends K3sVmOptions {
  /** Progress and warnings go here. @default silent */
  readonly logger?: Logger;
  readonly signal?: AbortSignal;
  /** The environment K3S_VM_* variables are read from, and the one the VM's run script gets. @default process.env */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Where the project root is searched from. @default process.cwd() */
  readonly cwd?: string;
  /** CLI flags (`{ memory: '4096' }`); they win over everything else and errors name them. @default {} */
  readonly flags?: FlagValues;
}

export interface StartOptions extends ClusterOptions {
  /**
   * The readiness steps, in order, the same at a boot and after a restore (`nodeReady` then also
   * believes the node's Lease). @default `k3sReadinessSteps`: `sshAnswers` → `k3sServiceActive` →
   * `kubeconfigPresent` → `apiReadyz` → `nodeReady` → `apiDiscoveryComplete` →
   * `defaultServiceAccount`, each exported, to compose a list with steps of one's own
   */
  readonly readiness?: readonly ReadinessStep[];
  /**
   * Keep the VM running even after the last user is done (the CLI's `start` does).
   * @default the resolved `keep` option (K3S_VM_KEEP)
   */
  readonly keep?: boolean;
}

/** Timings of a start, for progress lines and the benchmark. */
export interface StartTimings {
  readonly totalMs: number;
  readonly buildMs?: number;
  readonly launchMs?: number;
  readonly readyMs?: number;
  /** True when this start restored the saved snapshot instead of booting (`booted` is true too). */
  readonly restored?: boolean;
  /** After a restore: how long setting the guest's clock took (before the readiness steps). */
  readonly clockMs?: number;
  /** After a restore: how the clock was set (QEMU's guest agent, or SSH for a guest without one). */
  readonly clockBy?: GuestClockBy;
  /** Each readiness step in order ("SSH answers" first), or the health check of an attach. */
  readonly steps: ReadonlyArray<{ name: string; ms: number }>;
}

/** What every cluster handed to a run has, a VM or an existing cluster. */
export interface Cluster extends AsyncDisposable {
  readonly kind: 'vm' | 'existing';
  readonly config: ResolvedConfig;
  /** The VM's name, or the existing cluster's context. */
  readonly name: string;
  /** This run's id: namespaces the run creates carry it as a label (see runLabels). */
  readonly runId: string;
  /** Kubeconfig text of this cluster alone. */
  readonly kubeconfig: string;
  /** A file holding that kubeconfig (0600). */
  readonly kubeconfigPath: string;
  readonly apiServerUrl: string;
  readonly apiPort: number;
  /** True when this call booted a VM. */
  readonly booted: boolean;
  readonly timings: StartTimings;
  /** A loaded client-node KubeConfig. */
  kubeConfig(): KubeConfig;
  /** Ends this run's use of the cluster (see StartedCluster.stop and ConnectedCluster.stop). Idempotent. */
  stop(): Promise<{ stoppedVm: boolean }>;
}

/**
 * An existing cluster (K3S_VM_KUBECONFIG) used by this run. Stopping it deletes the
 * namespaces this run created and ends its heartbeat; the cluster itself is not touched.
 */
export interface ConnectedCluster extends Cluster {
  readonly kind: 'existing';
  readonly context: string;
}

/** A running cluster handed to a user of the VM. Stopping it releases this user's hold. */
export interface StartedCluster extends Cluster {
  readonly kind: 'vm';
  /** Kubeconfig text (server https://127.0.0.1:<apiPort>). */
  readonly kubeconfig: string;
  /** Path of the kubeconfig file in the state directory (0600). */
  readonly kubeconfigPath: string;
  readonly sshPort: number;
  readonly pid: number;
  readonly accel: 'kvm' | 'tcg';
  /** A new SSH connection to the guest as root; close it when done. */
  ssh(): Promise<GuestSsh>;
  /** This run's lease on the VM (what rewinds from its test workers name as theirs). */
  readonly leaseId: string;
  /**
   * Returns the VM to its ready-state snapshot, or to a named one, without a reboot (see
   * rewindCluster). Refused while another run uses the VM.
   */
  rewind(snapshot?: string): Promise<RewindResult>;
  /** Runs one command in the guest over SSH (calls in quick succession share a connection). */
  exec(command: string): Promise<{ stdout: string; stderr: string; exitCode: number | null }>;
  /**
   * Releases this user's lease; the VM is stopped when no other user holds one and it is
   * not kept. Idempotent.
   */
  stop(): Promise<{ stoppedVm: boolean }>;
}
