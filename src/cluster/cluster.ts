// The lifecycle operations the adapters call: start-or-attach, stop, status, reset, build.
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { K3sVmOptions, ResolvedConfig } from '../config/options.js';
import { resolveConfig } from '../config/resolve-config.js';
import { buildParameters, fingerprintDifferences, runtimeFingerprint } from '../config/fingerprint.js';
import { K3sVmError, throwIfAborted } from '../errors.js';
import { ensureKeyPair } from '../guest/keys.js';
import { apiReady, loadKubeConfig } from '../guest/kubeconfig.js';
import { k3sReadinessSteps, waitForReady, type ReadinessStep } from '../guest/readiness.js';
import { GuestSsh, waitForSsh } from '../guest/ssh.js';
import { silentLogger, type Logger } from '../log.js';
import { buildPathOf, buildVm, type BuildResult } from '../nix/build-vm.js';
import { kvmUdevRule, probeKvmCached, qemuOfRunScript } from '../qemu/accel-probe.js';
import { launchVm } from '../qemu/launch.js';
import { choosePorts } from '../qemu/ports.js';
import { stopQemu, type StopResult } from '../qemu/stop.js';
import { files } from '../state/files.js';
import { InstanceDir } from '../state/instance-dir.js';
import { clearLeases, liveLeases, takeLease, type Lease } from '../state/leases.js';
import { withLock } from '../state/lock.js';
import { isInstanceQemu, isRunning } from '../state/process.js';
import { logTailBlock, tailFile } from '../state/serial-log.js';
import { deriveStatus, qmpSocketPath, type InstanceStatus, type RuntimeRecord } from '../state/status.js';
import type { KubeConfig } from '@kubernetes/client-node';

/** Options of every lifecycle operation: the config options plus where to report and how to cancel. */
export interface ClusterOptions extends K3sVmOptions {
  /** Progress and warnings go here. @default silent */
  readonly logger?: Logger;
  readonly signal?: AbortSignal;
  /** The environment K3S_VM_* variables are read from. @default process.env */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Where the project root is searched from. @default process.cwd() */
  readonly cwd?: string;
}

export interface StartOptions extends ClusterOptions {
  /**
   * The readiness steps after SSH answers. @default the K3s steps (service active →
   * kubeconfig → /readyz → node Ready → default ServiceAccount)
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
  readonly sshMs?: number;
  readonly readyMs?: number;
  readonly steps: ReadonlyArray<{ name: string; ms: number }>;
}

/** A running cluster handed to a user of the VM. Stopping it releases this user's hold. */
export interface StartedCluster extends AsyncDisposable {
  readonly config: ResolvedConfig;
  readonly name: string;
  /** Kubeconfig text (server https://127.0.0.1:<apiPort>). */
  readonly kubeconfig: string;
  /** Path of the kubeconfig file in the state directory (0600). */
  readonly kubeconfigPath: string;
  readonly apiServerUrl: string;
  readonly apiPort: number;
  readonly sshPort: number;
  readonly pid: number;
  readonly accel: 'kvm' | 'tcg';
  /** True when this call booted the VM; false when it attached to a running one. */
  readonly booted: boolean;
  readonly timings: StartTimings;
  /** A loaded client-node KubeConfig. */
  kubeConfig(): KubeConfig;
  /** An SSH connection to the guest as root; close it when done. */
  ssh(): Promise<GuestSsh>;
  /** Runs one command in the guest over SSH (calls in quick succession share a connection). */
  exec(command: string): Promise<{ stdout: string; stderr: string; exitCode: number | null }>;
  /**
   * Releases this user's lease; the VM is stopped when no other user holds one and it is
   * not kept. Idempotent.
   */
  stop(): Promise<{ stoppedVm: boolean }>;
}

const defaultTimeoutSeconds = 300;
/** Emulation is an order of magnitude slower; K3s under TCG needs minutes. */
const emulationTimeoutFactor = 3;

/** The boot-and-readiness deadline: K3S_VM_TIMEOUT, else the default scaled for emulation. */
export function timeoutMsFor(config: ResolvedConfig, accel: 'kvm' | 'tcg'): number {
  if (config.timeoutSeconds !== undefined) return config.timeoutSeconds * 1000;
  return defaultTimeoutSeconds * 1000 * (accel === 'tcg' ? emulationTimeoutFactor : 1);
}

/** Picks the accelerator: a probe decides `auto`; `kvm` insists; `tcg` forces emulation. */
export async function chooseAccel(config: ResolvedConfig, logger: Logger, runScript?: string): Promise<'kvm' | 'tcg'> {
  if (config.accel === 'tcg') return 'tcg';
  const probe = await probeKvmCached(config.cacheDir, { qemu: runScript ? await qemuOfRunScript(runScript) : undefined });
  logger.debug(`KVM probe (${probe.cached ? 'cached for this host boot' : `${probe.durationMs} ms`}): ${probe.usable ? 'usable' : probe.reason}`);
  if (probe.usable) return 'kvm';
  if (config.accel === 'kvm') {
    throw new K3sVmError('KVM_UNUSABLE', `K3S_VM_ACCEL=kvm, but KVM is not usable: ${probe.reason}`, {
      hint:
        `on a CI runner, enable KVM with the udev rule: ${kvmUdevRule}; on a workstation, enable virtualisation in the firmware ` +
        'and add yourself to the kvm group; or set K3S_VM_ACCEL=tcg to emulate (slow)',
    });
  }
  logger.warn(`KVM is not usable (${probe.reason}); falling back to software emulation (TCG), which is many times slower. Timeouts are scaled ×${emulationTimeoutFactor}.`);
  return 'tcg';
}

function serialTailOf(dir: InstanceDir): () => Promise<string> {
  return async () => logTailBlock(`last lines of the serial console (${dir.file(files.serialLog)})`, await tailFile(dir.file(files.serialLog), 30));
}

/** Removes what a stopped or crashed VM leaves behind; the disk, keys and build stay. */
async function clearRuntime(dir: InstanceDir, runtime: RuntimeRecord | undefined): Promise<void> {
  await dir.remove(files.pid);
  await dir.remove(files.runtime);
  await dir.remove(files.kubeconfig);
  await rm(runtime?.qmpSocket ?? qmpSocketPath(dir), { force: true });
  await dir.remove(files.qmp);
}

async function stopInstance(dir: InstanceDir, status: InstanceStatus, logger: Logger, force: boolean): Promise<StopResult | undefined> {
  let result: StopResult | undefined;
  if (status.pid !== undefined) {
    logger.progress(`stopping the VM (pid ${status.pid})`);
    result = await stopQemu({ pid: status.pid, qmpSocket: status.runtime?.qmpSocket ?? qmpSocketPath(dir), force, logger });
    logger.progress(`stopped the VM (${result.how}, ${(result.durationMs / 1000).toFixed(1)} s)`);
  }
  await clearRuntime(dir, status.runtime);
  await clearLeases(dir);
  return result;
}

interface Prepared {
  readonly config: ResolvedConfig;
  readonly dir: InstanceDir;
  readonly logger: Logger;
}

async function prepare(options: ClusterOptions): Promise<Prepared> {
  const config = resolveConfig(options, options.env, options.cwd);
  const dir = new InstanceDir(config.dir);
  await dir.ensure();
  return { config, dir, logger: options.logger ?? silentLogger };
}

/** Builds the VM image (or confirms the last build is current). */
export async function buildCluster(options: ClusterOptions & { force?: boolean } = {}): Promise<BuildResult> {
  const { config, dir, logger } = await prepare(options);
  const keys = await ensureKeyPair(dir, `k3s-vm@${config.name}`);
  return withLock(dir, { timeoutMs: 600_000, signal: options.signal, onWait: (pid) => logger.progress(`waiting for process ${pid}, which is using the VM`) }, () =>
    buildVm(dir, { nix: config.nix, parameters: buildParameters(config, keys.publicKey), nixBuild: config.nixBuild, logger, signal: options.signal, force: options.force ?? false }),
  );
}

/**
 * Starts the VM or attaches to the one already running for this state directory, waits until
 * the cluster can take work, and returns it. Every user holds a lease; see StartedCluster.stop.
 */
export async function startCluster(options: StartOptions = {}): Promise<StartedCluster> {
  const started = Date.now();
  const { config, dir, logger } = await prepare(options);
  const keep = options.keep ?? config.keep;
  const signal = options.signal;
  const keys = await ensureKeyPair(dir, `k3s-vm@${config.name}`);
  const steps = options.readiness ?? k3sReadinessSteps;

  const { runtime, lease, booted, timings, kubeconfig } = await withLock(
    dir,
    { timeoutMs: 30 * 60_000, signal, onWait: (pid) => logger.progress(`waiting for process ${pid}, which is starting or stopping the VM`) },
    async () => {
      const status = await deriveStatus(dir);
      if (status.state === 'running' && status.runtime) {
        const differences = fingerprintDifferences(status.runtime.fingerprint, runtimeFingerprint(config));
        const others = await liveLeases(dir);
        if (differences.length === 0) {
          const attached = await attach(dir, status.runtime, keep, others.length, logger, signal);
          if (attached) return attached;
        } else if (others.length > 0) {
          throw new K3sVmError('CONFIG_MISMATCH', `the running VM's configuration differs and ${others.length} other run(s) still use it:\n  ${differences.join('\n  ')}`, {
            hint: 'wait for the other runs to finish, or use another state directory (K3S_VM_DIR) for this configuration',
          });
        } else {
          logger.progress(`restarting the VM because its configuration changed:\n  ${differences.join('\n  ')}`);
        }
        await stopInstance(dir, status, logger, false);
      } else if (status.state === 'broken') {
        logger.warn(`cleaning up after the last VM: ${status.reasons.join('; ')}`);
        await stopInstance(dir, status, logger, true);
      }
      return boot(config, dir, keys, keep, steps, logger, signal);
    },
  );

  const kubeconfigPath = dir.file(files.kubeconfig);
  let stopped: Promise<{ stoppedVm: boolean }> | undefined;
  let shared: Promise<GuestSsh> | undefined;
  let idleTimer: NodeJS.Timeout | undefined;
  let inFlight = 0;
  // If the process exits without stop() (a runner that calls process.exit on Ctrl-C), there
  // is no time for a graceful power-down; still leave no unkept VM without users behind.
  const onExit = () => releaseAtExit(dir, lease.id);
  process.once('exit', onExit);
  const cluster: StartedCluster = {
    config,
    name: config.name,
    kubeconfig,
    kubeconfigPath,
    apiServerUrl: `https://127.0.0.1:${runtime.apiPort}`,
    apiPort: runtime.apiPort,
    sshPort: runtime.sshPort,
    pid: runtime.pid,
    accel: runtime.accel,
    booted,
    timings: { ...timings, totalMs: Date.now() - started },
    kubeConfig: () => loadKubeConfig(kubeconfig),
    ssh: () => GuestSsh.connect({ port: runtime.sshPort, privateKey: keys.privateKey }),
    exec: async (command) => {
      // One connection serves the execs that follow each other (a handshake costs far more
      // than a command); it closes after a short idle time so it never keeps a process alive.
      clearTimeout(idleTimer);
      shared ??= GuestSsh.connect({ port: runtime.sshPort, privateKey: keys.privateKey });
      const connection = shared;
      const ssh = await connection.catch((error: unknown) => {
        shared = undefined;
        throw error;
      });
      inFlight++;
      try {
        return await ssh.exec(command);
      } catch (error) {
        ssh.close();
        if (shared === connection) shared = undefined;
        throw error;
      } finally {
        if (--inFlight === 0) {
          idleTimer = setTimeout(() => {
            if (shared === connection) shared = undefined;
            ssh.close();
          }, 1000);
          idleTimer.unref();
        }
      }
    },
    // The exit hook stays until the release is done: a runner that exits mid-release (Vitest
    // exits at once on Ctrl-C) still leaves no unkept VM behind.
    stop: () => {
      clearTimeout(idleTimer);
      void shared?.then((ssh) => ssh.close(), () => undefined);
      shared = undefined;
      return (stopped ??= release(dir, lease, logger).finally(() => process.off('exit', onExit)));
    },
    [Symbol.asyncDispose]: async () => {
      await cluster.stop();
    },
  };
  return cluster;
}

interface Acquired {
  readonly runtime: RuntimeRecord;
  readonly lease: Lease;
  readonly booted: boolean;
  readonly timings: Omit<StartTimings, 'totalMs'>;
  readonly kubeconfig: string;
}

/** Attaches to a running VM after a short health check; undefined if it is not healthy. */
async function attach(
  dir: InstanceDir,
  runtime: RuntimeRecord,
  keep: boolean,
  otherUsers: number,
  logger: Logger,
  signal: AbortSignal | undefined,
): Promise<Acquired | undefined> {
  const checkStarted = Date.now();
  const kubeconfig = await dir.readText(files.kubeconfig);
  if (!kubeconfig) {
    logger.warn('the running VM has no kubeconfig (it never became ready); restarting it');
    return undefined;
  }
  throwIfAborted(signal);
  try {
    const healthy = await apiReady(kubeconfig, AbortSignal.any([AbortSignal.timeout(5000), ...(signal ? [signal] : [])]));
    if (!healthy) throw new Error('/readyz did not answer ok');
  } catch (error) {
    throwIfAborted(signal);
    logger.warn(`the running VM (pid ${runtime.pid}) failed its health check (${(error as Error).message}); restarting it`);
    return undefined;
  }
  if (keep && !runtime.keep) {
    // A keep run promotes the VM to kept, so no other run's teardown stops it.
    await dir.writeJson(files.runtime, { ...runtime, keep: true });
  }
  if (!runtime.keep && otherUsers === 0) {
    logger.progress(`adopting the VM (pid ${runtime.pid}) left running by a run that ended without tearing down; it stops when this run ends`);
  }
  const lease = await takeLease(dir, false);
  const ms = Date.now() - checkStarted;
  logger.progress(`attached to the running VM (pid ${runtime.pid}, API ${`https://127.0.0.1:${runtime.apiPort}`}) in ${ms} ms`);
  return { runtime, lease, booted: false, timings: { steps: [{ name: 'health check', ms }] }, kubeconfig };
}

async function boot(
  config: ResolvedConfig,
  dir: InstanceDir,
  keys: { privateKey: string; publicKey: string },
  keep: boolean,
  steps: readonly ReadinessStep[],
  logger: Logger,
  signal: AbortSignal | undefined,
): Promise<Acquired> {
  const build = await buildVm(dir, { nix: config.nix, parameters: buildParameters(config, keys.publicKey), nixBuild: config.nixBuild, logger, signal });
  const accel = await chooseAccel(config, logger, build.runScript);
  const timeoutMs = timeoutMsFor(config, accel);
  const ports = await choosePorts({ apiPort: config.apiPort, sshPort: config.sshPort });
  throwIfAborted(signal);

  const launchStarted = Date.now();
  const deadline = launchStarted + timeoutMs;
  const qmpSocket = qmpSocketPath(dir);
  logger.progress(`booting ${config.name} (${accel === 'kvm' ? 'KVM' : 'software emulation'}, ${config.cpus} CPUs, ${config.memoryMiB} MiB; API on 127.0.0.1:${ports.apiPort}, SSH on 127.0.0.1:${ports.sshPort})`);
  const vm = await launchVm(dir, {
    runScript: build.runScript,
    diskImage: dir.file(files.disk),
    tmpDir: dir.file(files.tmpDir),
    qmpSocket,
    apiPort: ports.apiPort,
    sshPort: ports.sshPort,
    accel,
    kernelParams: config.kernelParams,
  });
  const runtime: RuntimeRecord = {
    pid: vm.pid,
    apiPort: ports.apiPort,
    sshPort: ports.sshPort,
    accel,
    qmpSocket,
    startedAt: new Date().toISOString(),
    fingerprint: { ...runtimeFingerprint(config), apiPort: String(ports.apiPort), sshPort: String(ports.sshPort) },
    keep,
    storePath: build.storePath,
  };
  await dir.writeJson(files.config, config);
  await dir.writeJson(files.runtime, runtime);
  await dir.writeAtomic(files.pid, `${vm.pid}\n`);
  let exitCode: number | null | undefined;
  void vm.exited.then((code) => {
    exitCode = code;
  });
  // Until the boot is over, a process exit (a runner calling process.exit on Ctrl-C) must not
  // leave this half-booted VM behind; there is no time for more than a signal then.
  const killOnExit = () => {
    if (isInstanceQemu(vm.pid, qmpSocket)) process.kill(vm.pid, 'SIGTERM');
  };
  process.once('exit', killOnExit);
  const vmGone = () => (exitCode !== undefined || !isRunning(vm.pid) ? `QEMU (pid ${vm.pid}) exited${exitCode === undefined || exitCode === null ? '' : ` with code ${exitCode}`}` : undefined);
  const serialTail = serialTailOf(dir);
  const launchMs = Date.now() - launchStarted;

  let ssh: GuestSsh | undefined;
  try {
    const sshStarted = Date.now();
    logger.progress(`step 1 of ${steps.length + 1} "SSH answers": waiting (deadline ${Math.round(timeoutMs / 1000)} s)`);
    ssh = await waitForSsh({ port: ports.sshPort, privateKey: keys.privateKey, deadline, signal, vmGone, serialTail });
    const sshMs = Date.now() - sshStarted;
    logger.progress(`ready: step 1 of ${steps.length + 1} "SSH answers" (${(sshMs / 1000).toFixed(1)} s)`);
    const readyStarted = Date.now();
    const ready = await waitForReady({
      ssh,
      apiPort: ports.apiPort,
      contextName: config.name,
      deadline,
      steps,
      logger,
      signal,
      vmGone,
      serialTail,
      firstStepNumber: 2,
    });
    await dir.writeAtomic(files.kubeconfig, ready.kubeconfig, 0o600);
    const lease = await takeLease(dir, true);
    const readyMs = Date.now() - readyStarted;
    logger.progress(`cluster ready in ${((Date.now() - launchStarted) / 1000).toFixed(1)} s; kubeconfig: ${dir.file(files.kubeconfig)}`);
    return {
      runtime,
      lease,
      booted: true,
      timings: { buildMs: build.durationMs, launchMs, sshMs, readyMs, steps: [{ name: 'SSH answers', ms: sshMs }, ...ready.stepDurationsMs] },
      kubeconfig: ready.kubeconfig,
    };
  } catch (error) {
    // Clean up, report cleanup problems separately, and rethrow the original error.
    try {
      await stopInstance(dir, { state: 'running', reasons: [], pid: isRunning(vm.pid) ? vm.pid : undefined, recordedPid: vm.pid, runtime }, logger, true);
    } catch (cleanupError) {
      logger.warn(`cleaning up the failed VM also failed: ${(cleanupError as Error).message}`);
    }
    throw error;
  } finally {
    process.off('exit', killOnExit);
    ssh?.close();
  }
}

/** Ends one user's hold: drops its lease and stops the VM if it was the last user and the VM is not kept. */
async function release(dir: InstanceDir, lease: Lease, logger: Logger): Promise<{ stoppedVm: boolean }> {
  return withLock(dir, { timeoutMs: 120_000 }, async () => {
    await lease.release();
    const status = await deriveStatus(dir);
    if (status.state !== 'running' || !status.runtime) return { stoppedVm: false };
    if (status.runtime.keep) {
      logger.progress(`leaving the VM running (kept; pid ${status.pid}); stop it with: npx k3s-vm stop`);
      return { stoppedVm: false };
    }
    const others = await liveLeases(dir);
    if (others.length > 0) {
      logger.progress(`leaving the VM running for ${others.length} other run(s)`);
      return { stoppedVm: false };
    }
    await stopInstance(dir, status, logger, false);
    return { stoppedVm: true };
  });
}

/** The synchronous last resort of an exiting process: drop the lease; stop QEMU if unkept and unused. */
function releaseAtExit(dir: InstanceDir, leaseId: string): void {
  try {
    rmSync(dir.file(join(files.leasesDir, `${leaseId}.json`)), { force: true });
    const runtime = JSON.parse(readFileSync(dir.file(files.runtime), 'utf8')) as RuntimeRecord;
    if (runtime.keep || !isInstanceQemu(runtime.pid, runtime.qmpSocket)) return;
    const others = readdirSync(dir.file(files.leasesDir)).filter((name) => {
      const pid = Number.parseInt(name, 10);
      return pid !== process.pid && isRunning(pid);
    });
    if (others.length > 0) return;
    process.kill(runtime.pid, 'SIGTERM');
    rmSync(dir.file(files.pid), { force: true });
    rmSync(dir.file(files.runtime), { force: true });
    rmSync(dir.file(files.kubeconfig), { force: true });
  } catch {
    // Nothing more can be done while exiting; the next run finds and cleans what is left.
  }
}

export interface StopClusterResult {
  /** What was running before. */
  readonly previous: InstanceStatus['state'];
  readonly stop: StopResult | undefined;
}

/** Stops the VM whoever started it (graceful power-down, then forced), and cleans a broken state. */
export async function stopCluster(options: ClusterOptions & { force?: boolean } = {}): Promise<StopClusterResult> {
  const { dir, logger } = await prepare(options);
  return withLock(dir, { timeoutMs: 120_000, signal: options.signal }, async () => {
    const status = await deriveStatus(dir);
    if (status.state === 'stopped') return { previous: 'stopped', stop: undefined };
    if (status.state === 'broken') logger.warn(`cleaning up: ${status.reasons.join('; ')}`);
    const stop = await stopInstance(dir, status, logger, options.force ?? false);
    return { previous: status.state, stop };
  });
}

export interface ClusterStatus {
  readonly config: ResolvedConfig;
  readonly state: InstanceStatus['state'];
  readonly reasons: readonly string[];
  readonly pid: number | undefined;
  readonly runtime: RuntimeRecord | undefined;
  readonly kubeconfigPath: string | undefined;
  readonly buildPath: string | undefined;
  readonly diskBytes: number | undefined;
  readonly users: number;
  /** Whether /readyz answers through the forwarded port (only asked with probeApi). */
  readonly apiReady: boolean | undefined;
}

/** The instance's status, derived from its files and process liveness. */
export async function clusterStatus(options: ClusterOptions & { probeApi?: boolean } = {}): Promise<ClusterStatus> {
  const config = resolveConfig(options, options.env, options.cwd);
  const dir = new InstanceDir(config.dir);
  const status = await deriveStatus(dir);
  const disk = await stat(dir.file(files.disk)).catch(() => undefined);
  const running = status.state === 'running';
  const kubeconfig = running ? await dir.readText(files.kubeconfig) : undefined;
  const ready = options.probeApi
    ? kubeconfig !== undefined && (await apiReady(kubeconfig, AbortSignal.timeout(3000)).catch(() => false))
    : undefined;
  return {
    config,
    state: status.state,
    reasons: status.reasons,
    pid: status.pid,
    runtime: status.state === 'running' ? status.runtime : undefined,
    kubeconfigPath: kubeconfig === undefined ? undefined : dir.file(files.kubeconfig),
    buildPath: buildPathOf(dir),
    diskBytes: disk ? disk.blocks * 512 : undefined,
    users: running ? (await liveLeases(dir)).length : 0,
    apiReady: ready,
  };
}

/** Deletes the disk (cluster state); keys and build stay. Refuses while the VM runs unless forced. */
export async function resetCluster(options: ClusterOptions & { force?: boolean } = {}): Promise<{ stoppedVm: boolean; deletedDisk: boolean }> {
  const { dir, logger } = await prepare(options);
  return withLock(dir, { timeoutMs: 120_000, signal: options.signal }, async () => {
    const status = await deriveStatus(dir);
    let stoppedVm = false;
    if (status.state !== 'stopped') {
      if (status.state === 'running' && !options.force) {
        throw new K3sVmError('STILL_RUNNING', `the VM is running (pid ${status.pid}); reset would delete its disk under it`, {
          hint: 'stop it first (k3s-vm stop), or reset with --force to stop it and reset',
        });
      }
      await stopInstance(dir, status, logger, true);
      stoppedVm = status.state === 'running';
    }
    const deletedDisk = dir.exists(files.disk);
    await dir.remove(files.disk);
    await dir.remove(files.tmpDir);
    logger.progress(deletedDisk ? `deleted the VM's disk ${dir.file(files.disk)}; the next start begins with a fresh cluster` : 'there was no disk to delete');
    return { stoppedVm, deletedDisk };
  });
}
