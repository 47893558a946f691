// Boot: build if needed, launch QEMU through the run script, and wait until the cluster can take
// work. The boot is two lists of stages (src/cluster/stages.ts) over one context: preparing,
// where everything that can be refused is refused before the build and what the boot learns
// once (ports, the build, the disk image with its QEMU tools, the accelerator) is kept; and
// launching, run again as a cold boot when restoring the snapshot fails.
import { atExit } from '../at-exit.js';
import { buildParameters, runtimeFingerprint } from '../config/fingerprint.js';
import { timeoutMsFor } from '../config/defaults.js';
import type { ResolvedConfig } from '../config/options.js';
import { throwIfAborted } from '../errors.js';
import { authorizedKeyKernelParam, type KeyPair } from '../guest/keys.js';
import { waitForReady, type ReadinessStep, type ReadyCluster } from '../readiness/engine.js';
import { k3sReadinessSteps, requiredApiServicesFor } from '../readiness/steps.js';
import type { Logger } from '../log.js';
import { buildVm, type BuildResult } from '../nix/build-vm.js';
import { chooseAccel, refuseKnownDeadKvm } from '../qemu/accel.js';
import { DiskImage } from '../qemu/disk.js';
import { launchVm, type LaunchedVm } from '../qemu/launch.js';
import { restoreOptions, type SnapshotRecord } from '../qemu/snapshot.js';
import { choosePorts } from '../qemu/ports.js';
import { files } from '../state/files.js';
import type { InstanceDir } from '../state/instance-dir.js';
import { removeRuntimeFilesSync, takeLease, type Lease } from '../state/leases.js';
import { isInstanceQemu, isRunning, waitForExitSync } from '../state/process.js';
import { logTailBlock, tailFile } from '../state/serial-log.js';
import { qmpSocketPath, type RuntimeRecord } from '../state/status.js';
import type { GuestClockBy, StartTimings } from './options.js';
import { checkDisk, settleDisk, type DiskPlan } from './disk.js';
import {
  correctGuestClock,
  correctGuestClockByAgent,
  planRestore,
  removeSnapshot,
  saveSnapshot,
  type SnapshotContext,
} from './snapshot.js';
import { runStages, type Stage } from './stages.js';
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

/**
 * What stages learn for the stages after them. Each is learnt once (learn) and read by later
 * stages (known); reading one before the stage that learns it is a bug in the list's order.
 */
class Learnt<T extends object> {
  readonly #values: Partial<T> = {};

  learn<K extends keyof T>(key: K, value: T[K]): void {
    this.#values[key] = value;
  }

  known<K extends keyof T>(key: K): T[K] {
    if (!(key in this.#values)) throw new Error(`boot: ${String(key)} is read before the stage that learns it`);
    return this.#values[key] as T[K];
  }
}

/** What preparing a boot learns: all of it before QEMU starts. */
interface Prepared {
  readonly ports: { readonly apiPort: number; readonly sshPort: number };
  readonly disk: DiskPlan;
  readonly build: BuildResult;
  /** The VM's disk image, with the run script's QEMU, qemu-img and their version, found once. */
  readonly image: DiskImage;
  readonly accel: 'kvm' | 'tcg';
  readonly timeoutMs: number;
  /** Set with snapshots on: what planning, saving and removing the snapshot need. */
  readonly snapshot: SnapshotContext | undefined;
  /** The snapshot's record when this boot restores it (-loadvm) instead of booting. */
  readonly restorable: SnapshotRecord | undefined;
}

class Preparing extends Learnt<Prepared> {
  constructor(readonly plan: BootPlan) {
    super();
  }
}

/** Everything that can be refused is refused before the build, which can take minutes. */
export const prepareStages: readonly Stage<Preparing>[] = [
  {
    name: 'choose the ports',
    run: async (boot) => {
      const { config } = boot.plan;
      boot.learn('ports', await choosePorts({ apiPort: config.apiPort, sshPort: config.sshPort }, config.names));
    },
  },
  {
    name: 'refuse a KVM known not to work',
    run: ({ plan: { config } }) => refuseKnownDeadKvm({ accel: config.accel, cacheDir: config.cacheDir, accelName: config.names.accel }),
  },
  {
    name: 'check what the disk was made for',
    run: async (boot) => boot.learn('disk', await checkDisk(boot.plan.dir, boot.plan.config, boot.plan.logger)),
  },
  {
    name: 'build the VM',
    run: async (boot) => {
      const { config, dir, logger, signal } = boot.plan;
      const parameters = buildParameters(config);
      boot.learn(
        'build',
        await buildVm(dir, { nix: config.nix, parameters, nixBuild: config.nixBuild, names: config.names, logger, signal }),
      );
    },
  },
  {
    name: "find the run script's QEMU tools",
    run: async (boot) => {
      const { dir, env } = boot.plan;
      boot.learn('image', await DiskImage.of(dir.file(files.disk), boot.known('build').runScript, env['PATH'], dir.dirName));
    },
  },
  {
    name: 'choose the accelerator',
    run: async (boot) => {
      const { config, logger, signal } = boot.plan;
      const accel = await chooseAccel({
        accel: config.accel,
        cacheDir: config.cacheDir,
        logger,
        qemu: boot.known('image').tools.qemu,
        accelName: config.names.accel,
      });
      boot.learn('accel', accel);
      boot.learn('timeoutMs', timeoutMsFor(config.timeoutSeconds, accel));
      throwIfAborted(signal);
    },
  },
  {
    name: 'settle the disk',
    run: (boot) => settleDisk(boot.plan.dir, boot.known('disk'), boot.known('image'), boot.plan.logger),
  },
  {
    name: 'plan the restore',
    run: async (boot) => {
      const { config, dir, keys, logger } = boot.plan;
      const build = boot.known('build');
      const snapshot: SnapshotContext | undefined = config.snapshot
        ? {
            dir,
            config,
            image: boot.known('image'),
            storePath: build.storePath,
            sshPublicKey: keys.publicKey,
            accel: boot.known('accel'),
            logger,
          }
        : undefined;
      boot.learn('snapshot', snapshot);
      const planned = snapshot ? await planRestore(snapshot) : undefined;
      boot.learn('restorable', planned?.restore ? planned.record : undefined);
    },
  },
];

/** Boots the VM and waits for readiness. On any failure the VM is stopped and the original error rethrown. */
export async function boot(plan: BootPlan): Promise<Acquired> {
  const preparing = new Preparing(plan);
  await runStages(prepareStages, preparing, plan.logger);
  const prepared: Prepared = {
    ports: preparing.known('ports'),
    disk: preparing.known('disk'),
    build: preparing.known('build'),
    image: preparing.known('image'),
    accel: preparing.known('accel'),
    timeoutMs: preparing.known('timeoutMs'),
    snapshot: preparing.known('snapshot'),
    restorable: preparing.known('restorable'),
  };
  const { snapshot, restorable } = prepared;
  if (snapshot && restorable) {
    try {
      return await launch(plan, prepared, restorable);
    } catch (error) {
      // Ctrl-C ends the start; the snapshot was only read, so it stays for the next one.
      if (plan.signal?.aborted) throw error;
      plan.logger.progress(
        `cold boot: restoring the snapshot failed (${(error as Error).message.split('\n')[0]}); it is deleted and a new one saved once ready`,
      );
      await removeSnapshot(snapshot).catch((removeError: unknown) =>
        plan.logger.warn(`could not delete the snapshot: ${(removeError as Error).message}`),
      );
    }
  }
  return launch(plan, prepared, undefined);
}

/** How long a restore may take to be ready before it counts as failed and the VM boots instead. */
const restoreTimeoutMs = 60_000;

/**
 * How long the guest agent may take to answer once QEMU listens, after a restore: the wait
 * includes QEMU's load of the snapshot. A guest without the agent costs this much before its
 * clock is set over SSH.
 */
const restoreAgentTimeoutMs = 5000;

/** What launching learns: the VM and, stage by stage, how far it got. */
interface Launched {
  readonly vm: LaunchedVm;
  readonly runtime: RuntimeRecord;
  /** Why QEMU is gone, once it is; undefined while it runs. */
  readonly vmGone: () => string | undefined;
  readonly launchMs: number;
  readonly clock: { readonly ms: number; readonly by: GuestClockBy };
  readonly ready: ReadyCluster;
  readonly readyMs: number;
  readonly lease: Lease;
}

class Launching extends Learnt<Launched> {
  /** The overall deadline of this launch (epoch ms). */
  readonly deadline: number;

  constructor(
    readonly plan: BootPlan,
    readonly prepared: Prepared,
    /** The snapshot restored (-loadvm) instead of booting; undefined for a cold boot. */
    readonly restored: SnapshotRecord | undefined,
    readonly launchStarted: number,
    timeoutMs: number,
  ) {
    super();
    this.deadline = launchStarted + timeoutMs;
  }
}

/**
 * From QEMU's start to a ready cluster this process holds a lease on. The first stage
 * registers the VM's clean-up: any stage after it that fails leaves no QEMU behind.
 */
export const launchStages: readonly Stage<Launching>[] = [
  {
    name: 'check the disk image',
    run: ({ prepared }) => prepared.image.check(),
  },
  {
    name: 'launch QEMU',
    run: async (boot, scope) => {
      const { plan, prepared, restored } = boot;
      const { config, dir, logger } = plan;
      const { ports, build, accel } = prepared;
      const qmpSocket = qmpSocketPath(dir);
      logger.progress(
        `${restored ? 'restoring the saved' : 'booting'} ${config.name} (${accel === 'kvm' ? 'KVM' : 'software emulation'}, ${config.cpus} CPUs, ${config.memoryMiB} MiB; ` +
          `API on 127.0.0.1:${ports.apiPort}, SSH on 127.0.0.1:${ports.sshPort})`,
      );
      const vm = await launchVm(dir, {
        runScript: build.runScript,
        diskImage: prepared.image.path,
        tmpDir: dir.file(files.tmpDir),
        qmpSocket,
        apiPort: ports.apiPort,
        sshPort: ports.sshPort,
        accel,
        // The instance's key travels on the kernel command line, after the user's parameters.
        kernelParams: [...config.kernelParams, authorizedKeyKernelParam(plan.keys.publicKey)],
        extraQemuOptions: restored ? restoreOptions() : [],
        env: plan.env,
      });
      const runtime: RuntimeRecord = {
        pid: vm.pid,
        apiPort: ports.apiPort,
        sshPort: ports.sshPort,
        accel,
        qmpSocket,
        startedAt: new Date(boot.launchStarted).toISOString(),
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
      scope.onEnd(
        atExit(() => {
          vm.terminateSync();
          if (waitForExitSync(vm.pid, 2000)) removeRuntimeFilesSync(dir, qmpSocket);
        }),
      );
      scope.onFailure(async () => {
        // Until the run script has exec'd QEMU, the pid does not look like QEMU: it is still our
        // own child then, and stopped by signal.
        if (exitCode === undefined && !isInstanceQemu(vm.pid, qmpSocket)) await vm.terminate();
        const pid = isRunning(vm.pid) ? vm.pid : undefined;
        await stopInstance(dir, { state: 'running', reasons: [], pid, recordedPid: vm.pid, runtime }, logger, true);
      });
      boot.learn('vm', vm);
      boot.learn('runtime', runtime);
      boot.learn('vmGone', () =>
        exitCode !== undefined || !isRunning(vm.pid)
          ? `QEMU (pid ${vm.pid}) exited${exitCode === undefined || exitCode === null ? '' : ` with code ${exitCode}`}`
          : undefined,
      );
      // Recorded at once, so that a failure from here on still finds and stops this QEMU.
      await dir.writeAtomic(files.pid, `${vm.pid}\n`);
      await dir.writeJson(files.runtime, runtime);
      boot.learn('launchMs', Date.now() - boot.launchStarted);
    },
  },
  {
    // Before readiness: the guest wakes at the time of the save, and a Ready condition is only
    // believed when reported after this launch (bootStartedAt below).
    name: "set the guest's clock",
    when: (boot) => boot.restored !== undefined,
    run: async (boot) => {
      const { plan, prepared } = boot;
      const { signal, logger } = plan;
      const vmGone = boot.known('vmGone');
      const started = Date.now();
      const byAgent = await correctGuestClockByAgent(boot.known('runtime').qmpSocket, {
        // QEMU opens the socket as it starts, before it loads the snapshot; the agent answers
        // once the load is done, which under emulation can take seconds.
        listenUntil: Math.min(boot.deadline, Date.now() + 10_000),
        answerTimeoutMs: restoreAgentTimeoutMs,
        signal,
        logger,
        vmGone,
      });
      if (!byAgent) {
        await correctGuestClock({ port: prepared.ports.sshPort, privateKey: plan.keys.privateKey }, boot.deadline, {
          signal,
          logger,
          vmGone,
        });
      }
      boot.learn('clock', { ms: Date.now() - started, by: byAgent ? 'guest agent' : 'ssh' });
    },
  },
  {
    name: 'wait for readiness',
    run: async (boot) => {
      const { plan, prepared, restored } = boot;
      const { config, dir, logger, signal } = plan;
      const started = Date.now();
      boot.learn(
        'ready',
        await waitForReady({
          target: { port: prepared.ports.sshPort, privateKey: plan.keys.privateKey },
          apiPort: prepared.ports.apiPort,
          contextName: config.name,
          timeoutName: config.names.timeoutSeconds,
          nodeName: config.name,
          bootStartedAt: boot.launchStarted,
          requiredApiServices: requiredApiServicesFor(config.disable),
          deadline: boot.deadline,
          // After a restore, "node Ready" also believes the node's Lease (src/readiness/steps.ts).
          restoredAt: restored ? boot.launchStarted : undefined,
          steps: plan.steps ?? k3sReadinessSteps,
          logger,
          signal,
          vmGone: boot.known('vmGone'),
          serialTail: async () =>
            logTailBlock(`last lines of the serial console (${dir.file(files.serialLog)})`, await tailFile(dir.file(files.serialLog), 30)),
        }),
      );
      boot.learn('readyMs', Date.now() - started);
    },
  },
  {
    name: 'write the kubeconfig',
    run: (boot) => boot.plan.dir.writeAtomic(files.kubeconfig, boot.known('ready').kubeconfig, 0o600),
  },
  {
    name: 'save the snapshot',
    when: ({ plan, prepared, restored }) => prepared.snapshot !== undefined && !restored && plan.saveWhenReady !== false,
    run: async (boot) => {
      const { qmpSocket, pid } = boot.known('runtime');
      await saveSnapshot({ ...boot.prepared.snapshot!, qmpSocket, pid });
    },
  },
  {
    name: 'take a lease',
    run: async (boot) => boot.learn('lease', await takeLease(boot.plan.dir)),
  },
];

/** Launches QEMU (booting, or restoring the snapshot) and waits for readiness. On any failure the VM is stopped and the original error rethrown. */
async function launch(plan: BootPlan, prepared: Prepared, restored: SnapshotRecord | undefined): Promise<Acquired> {
  const launchStarted = Date.now();
  const timeoutMs = restored ? Math.min(prepared.timeoutMs, restoreTimeoutMs) : prepared.timeoutMs;
  const launching = new Launching(plan, prepared, restored, launchStarted, timeoutMs);
  await runStages(launchStages, launching, plan.logger);
  const clock = restored ? launching.known('clock') : undefined;
  const launchMs = launching.known('launchMs');
  const readyMs = launching.known('readyMs');
  const ready = launching.known('ready');
  plan.logger.progress(
    `cluster ready in ${((launchMs + (clock?.ms ?? 0) + readyMs) / 1000).toFixed(1)} s${restored ? ' (restored from the snapshot)' : ''}; kubeconfig: ${plan.dir.file(files.kubeconfig)}`,
  );
  return {
    runtime: launching.known('runtime'),
    lease: launching.known('lease'),
    booted: true,
    timings: {
      buildMs: prepared.build.durationMs,
      launchMs,
      readyMs,
      steps: ready.stepDurationsMs,
      restored: restored !== undefined,
      ...(clock ? { clockMs: clock.ms, clockBy: clock.by } : {}),
    },
    kubeconfig: ready.kubeconfig,
    ...(prepared.snapshot ? { snapshot: { context: prepared.snapshot, restored } } : {}),
  };
}
