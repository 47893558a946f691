// Boot: build if needed, launch QEMU through the run script, and wait until the cluster can take work.
import { atExit } from '../at-exit.js';
import { buildParameters, runtimeFingerprint } from '../config/fingerprint.js';
import { timeoutMsFor } from '../config/defaults.js';
import type { ResolvedConfig } from '../config/options.js';
import { throwIfAborted } from '../errors.js';
import { authorizedKeyKernelParam, type KeyPair } from '../guest/keys.js';
import { waitForReady, type ReadinessStep } from '../readiness/engine.js';
import { k3sReadinessSteps, requiredApiServicesFor } from '../readiness/steps.js';
import type { Logger } from '../log.js';
import { buildVm } from '../nix/build-vm.js';
import { chooseAccel, refuseKnownDeadKvm } from '../qemu/accel.js';
import { launchVm } from '../qemu/launch.js';
import { restoreOptions, type SnapshotRecord } from '../qemu/snapshot.js';
import { choosePorts } from '../qemu/ports.js';
import { files } from '../state/files.js';
import type { InstanceDir } from '../state/instance-dir.js';
import { removeRuntimeFilesSync, takeLease, type Lease } from '../state/leases.js';
import { isInstanceQemu, isRunning, waitForExitSync } from '../state/process.js';
import { logTailBlock, tailFile } from '../state/serial-log.js';
import { qmpSocketPath, type RuntimeRecord } from '../state/status.js';
import type { GuestClockBy, StartTimings } from './options.js';
import { checkDisk, settleDisk } from './disk.js';
import {
  correctGuestClock,
  correctGuestClockByAgent,
  planRestore,
  removeSnapshot,
  saveSnapshot,
  type SnapshotContext,
} from './snapshot.js';
import { stopInstance } from './stop.js';

/** A VM this process now holds a lease on, booted or attached. */
export interface Acquired {
  readonly runtime: RuntimeRecord;
  readonly lease: Lease;
  readonly booted: boolean;
  readonly timings: Omit<StartTimings, 'totalMs'>;
  readonly kubeconfig: string;
  /**
   * Set when this start launched the VM with snapshots on: what a later save needs, and the
   * record restored (undefined after a cold boot).
   */
  readonly snapshot?: { readonly context: SnapshotContext; readonly restored: SnapshotRecord | undefined } | undefined;
}

export interface BootPlan {
  readonly config: ResolvedConfig;
  readonly dir: InstanceDir;
  readonly keys: KeyPair;
  readonly keep: boolean;
  readonly steps?: readonly ReadinessStep[] | undefined;
  readonly logger: Logger;
  readonly signal?: AbortSignal | undefined;
  /** The environment the run script starts from. */
  readonly env: Readonly<Record<string, string | undefined>>;
  /**
   * Save the snapshot as soon as the cluster is ready. False when a workload follows: the
   * start saves it after the workload is loaded, so that the snapshot holds it. @default true
   */
  readonly saveWhenReady?: boolean;
}

/** Boots the VM and waits for readiness. On any failure the VM is stopped and the original error rethrown. */
export async function boot(plan: BootPlan): Promise<Acquired> {
  const { config, dir, logger, signal } = plan;
  // Everything that can be refused is refused before the build, which can take minutes.
  const ports = await choosePorts({ apiPort: config.apiPort, sshPort: config.sshPort }, config.names);
  await refuseKnownDeadKvm({ accel: config.accel, cacheDir: config.cacheDir, accelName: config.names.accel });
  const disk = await checkDisk(dir, config, logger);
  const build = await buildVm(dir, {
    nix: config.nix,
    parameters: buildParameters(config),
    nixBuild: config.nixBuild,
    names: config.names,
    logger,
    signal,
  });
  const accel = await chooseAccel({
    accel: config.accel,
    cacheDir: config.cacheDir,
    logger,
    runScript: build.runScript,
    accelName: config.names.accel,
  });
  const timeoutMs = timeoutMsFor(config.timeoutSeconds, accel);
  throwIfAborted(signal);
  await settleDisk(dir, disk, { runScript: build.runScript, pathVariable: plan.env['PATH'] }, logger);

  const snapshot: SnapshotContext | undefined = config.snapshot
    ? {
        dir,
        config,
        runScript: build.runScript,
        storePath: build.storePath,
        sshPublicKey: plan.keys.publicKey,
        accel,
        env: plan.env,
        logger,
      }
    : undefined;
  const launch = { plan, ports, build, accel, timeoutMs, snapshot };
  const planned = snapshot ? await planRestore(snapshot) : { restore: false as const };
  if (snapshot && planned.restore) {
    try {
      return await launchAndWait({ ...launch, restore: true, restored: planned.record });
    } catch (error) {
      // Ctrl-C ends the start; the snapshot was only read, so it stays for the next one.
      if (signal?.aborted) throw error;
      logger.progress(
        `cold boot: restoring the snapshot failed (${(error as Error).message.split('\n')[0]}); it is deleted and a new one saved once ready`,
      );
      await removeSnapshot(snapshot).catch((removeError: unknown) =>
        logger.warn(`could not delete the snapshot: ${(removeError as Error).message}`),
      );
    }
  }
  return launchAndWait({ ...launch, restore: false, restored: undefined });
}

/** How long a restore may take to be ready before it counts as failed and the VM boots instead. */
const restoreTimeoutMs = 60_000;

/**
 * How long the guest agent may take to answer once QEMU listens, after a restore: the wait
 * includes QEMU's load of the snapshot. A guest without the agent costs this much before its
 * clock is set over SSH.
 */
const restoreAgentTimeoutMs = 5000;

interface LaunchPlanOfBoot {
  readonly plan: BootPlan;
  readonly ports: { readonly apiPort: number; readonly sshPort: number };
  readonly build: { readonly runScript: string; readonly storePath: string; readonly durationMs: number };
  readonly accel: 'kvm' | 'tcg';
  readonly timeoutMs: number;
  readonly snapshot: SnapshotContext | undefined;
  /** Restore the snapshot (-loadvm) instead of booting; otherwise boot and, with snapshots on, save once ready. */
  readonly restore: boolean;
  /** The snapshot's record when restoring it. */
  readonly restored: SnapshotRecord | undefined;
}

/** Launches QEMU (booting, or restoring the snapshot) and waits for readiness. On any failure the VM is stopped and the original error rethrown. */
async function launchAndWait(launch: LaunchPlanOfBoot): Promise<Acquired> {
  const { plan, ports, build, accel, snapshot, restore } = launch;
  const { config, dir, logger, signal } = plan;
  const timeoutMs = restore ? Math.min(launch.timeoutMs, restoreTimeoutMs) : launch.timeoutMs;
  const launchStarted = Date.now();
  const qmpSocket = qmpSocketPath(dir);
  logger.progress(
    `${restore ? 'restoring the saved' : 'booting'} ${config.name} (${accel === 'kvm' ? 'KVM' : 'software emulation'}, ${config.cpus} CPUs, ${config.memoryMiB} MiB; ` +
      `API on 127.0.0.1:${ports.apiPort}, SSH on 127.0.0.1:${ports.sshPort})`,
  );
  const vm = await launchVm(dir, {
    runScript: build.runScript,
    diskImage: dir.file(files.disk),
    tmpDir: dir.file(files.tmpDir),
    qmpSocket,
    apiPort: ports.apiPort,
    sshPort: ports.sshPort,
    accel,
    // The instance's key travels on the kernel command line, after the user's parameters.
    kernelParams: [...config.kernelParams, authorizedKeyKernelParam(plan.keys.publicKey)],
    extraQemuOptions: restore ? restoreOptions() : [],
    env: plan.env,
  });
  const runtime: RuntimeRecord = {
    pid: vm.pid,
    apiPort: ports.apiPort,
    sshPort: ports.sshPort,
    accel,
    qmpSocket,
    startedAt: new Date(launchStarted).toISOString(),
    fingerprint: { ...runtimeFingerprint(config), apiPort: String(ports.apiPort), sshPort: String(ports.sshPort) },
    keep: plan.keep,
    storePath: build.storePath,
  };
  let exitCode: number | null | undefined;
  void vm.exited.then((code) => {
    exitCode = code;
  });
  // Until the boot is over, a process exit (a runner calling process.exit on Ctrl-C) must not
  // leave this half-booted VM behind; there is no time for more than a signal then.
  // Its files go too once it is gone, so that the next start finds the VM plainly stopped.
  const cancelExitWork = atExit(() => {
    vm.terminateSync();
    if (waitForExitSync(vm.pid, 2000)) removeRuntimeFilesSync(dir, qmpSocket);
  });
  try {
    // Recorded at once, so that a failure from here on still finds and stops this QEMU.
    await dir.writeAtomic(files.pid, `${vm.pid}\n`);
    await dir.writeJson(files.runtime, runtime);
    const launchMs = Date.now() - launchStarted;
    const vmGone = () =>
      exitCode !== undefined || !isRunning(vm.pid)
        ? `QEMU (pid ${vm.pid}) exited${exitCode === undefined || exitCode === null ? '' : ` with code ${exitCode}`}`
        : undefined;
    let clockMs: number | undefined;
    let clockBy: GuestClockBy | undefined;
    if (restore) {
      // Before readiness: the guest wakes at the time of the save, and a Ready condition is
      // only believed when reported after this launch (bootStartedAt below).
      const clockStarted = Date.now();
      const byAgent = await correctGuestClockByAgent(qmpSocket, {
        // QEMU opens the socket as it starts, before it loads the snapshot; the agent answers
        // once the load is done, which under emulation can take seconds.
        listenUntil: Math.min(launchStarted + timeoutMs, Date.now() + 10_000),
        answerTimeoutMs: restoreAgentTimeoutMs,
        signal,
        logger,
        vmGone,
      });
      clockBy = byAgent ? 'guest agent' : 'ssh';
      if (!byAgent) {
        await correctGuestClock({ port: ports.sshPort, privateKey: plan.keys.privateKey }, launchStarted + timeoutMs, {
          signal,
          logger,
          vmGone,
        });
      }
      clockMs = Date.now() - clockStarted;
    }
    const readyStarted = Date.now();
    const ready = await waitForReady({
      target: { port: ports.sshPort, privateKey: plan.keys.privateKey },
      apiPort: ports.apiPort,
      contextName: config.name,
      timeoutName: config.names.timeoutSeconds,
      nodeName: config.name,
      bootStartedAt: launchStarted,
      requiredApiServices: requiredApiServicesFor(config.disable),
      deadline: launchStarted + timeoutMs,
      // After a restore, "node Ready" also believes the node's Lease (src/readiness/steps.ts).
      restoredAt: restore ? launchStarted : undefined,
      steps: plan.steps ?? k3sReadinessSteps,
      logger,
      signal,
      vmGone,
      serialTail: async () =>
        logTailBlock(`last lines of the serial console (${dir.file(files.serialLog)})`, await tailFile(dir.file(files.serialLog), 30)),
    });
    const readyMs = Date.now() - readyStarted;
    await dir.writeAtomic(files.kubeconfig, ready.kubeconfig, 0o600);
    if (snapshot && !restore && plan.saveWhenReady !== false) await saveSnapshot({ ...snapshot, qmpSocket, pid: vm.pid });
    const lease = await takeLease(dir);
    logger.progress(
      `cluster ready in ${((launchMs + (clockMs ?? 0) + readyMs) / 1000).toFixed(1)} s${restore ? ' (restored from the snapshot)' : ''}; kubeconfig: ${dir.file(files.kubeconfig)}`,
    );
    return {
      runtime,
      lease,
      booted: true,
      timings: {
        buildMs: build.durationMs,
        launchMs,
        readyMs,
        steps: ready.stepDurationsMs,
        restored: restore,
        ...(clockMs === undefined ? {} : { clockMs }),
        ...(clockBy === undefined ? {} : { clockBy }),
      },
      kubeconfig: ready.kubeconfig,
      ...(snapshot ? { snapshot: { context: snapshot, restored: launch.restored } } : {}),
    };
  } catch (error) {
    // Clean up, report cleanup problems separately, and rethrow the original error.
    try {
      // Until the run script has exec'd QEMU, the pid does not look like QEMU: it is still our
      // own child then, and stopped by signal.
      if (exitCode === undefined && !isInstanceQemu(vm.pid, qmpSocket)) await vm.terminate();
      const pid = isRunning(vm.pid) ? vm.pid : undefined;
      await stopInstance(dir, { state: 'running', reasons: [], pid, recordedPid: vm.pid, runtime }, logger, true);
    } catch (cleanupError) {
      logger.warn(`cleaning up the failed VM also failed: ${(cleanupError as Error).message}`);
    }
    throw error;
  } finally {
    cancelExitWork();
  }
}
