// Rewind: return the running VM to a snapshot (the ready-state one or a named one) without a reboot, then check it is ready again.
import { timeoutMsFor } from '../config/defaults.js';
import { setting } from '../config/names.js';
import type { ResolvedConfig } from '../config/options.js';
import { K3sVmError } from '../errors.js';
import { waitForReady, type ReadinessStep, type ReadyCluster } from '../readiness/engine.js';
import { k3sReadinessSteps, k3sRewindSteps, sshAnswers } from '../readiness/steps.js';
import type { Logger } from '../log.js';
import { loadInternalSnapshot, LoadSnapshotError, snapshotTag, whyNotRestorable, type SnapshotRecord } from '../qemu/snapshot.js';
import { files } from '../state/files.js';
import type { InstanceDir } from '../state/instance-dir.js';
import { liveLeases } from '../state/leases.js';
import { withLock } from '../state/lock.js';
import { isRunning } from '../state/process.js';
import { logTailBlock, tailFile } from '../state/serial-log.js';
import { deriveStatus } from '../state/status.js';
import { checkSnapshotName, readSnapshotRecord, runningVmImage, runningVmKey } from './named-snapshots.js';
import { environment } from '../config/resolve-config.js';
import type { ClusterOptions, GuestClockBy } from './options.js';
import { prepare, stopLockTimeoutMs } from './prepare.js';
import { correctGuestClockByAgent, setGuestClock } from './snapshot.js';
import { stopInstance } from './stop.js';

export interface RewindOptions extends ClusterOptions {
  /** The snapshot to return to: a name saved with `k3s-vm snapshot save`. @default the ready-state snapshot (k3s-vm-ready) */
  readonly to?: string;
  /**
   * Leases of the caller besides those of this process (a test runner's main process holds
   * the lease its workers rewind under). Any other live lease refuses the rewind.
   */
  readonly ownLeases?: readonly string[];
  /** The readiness steps after the rewind. @default the K3s steps, "node Ready" as after a restore */
  readonly readiness?: readonly ReadinessStep[];
}

/** What a rewind took. */
export interface RewindResult {
  readonly snapshot: string;
  /** QEMU's loadvm: the VM stopped, disk reverted, memory loaded, running again. */
  readonly loadMs: number;
  /** Setting the guest's clock to the host's: through the guest agent, or else inside the first readiness step, on its connection. */
  readonly clockMs: number;
  /** How the clock was set: QEMU's guest agent (then no SSH handshake is made), or SSH for a guest without one. */
  readonly clockBy: GuestClockBy;
  /** The readiness steps: after the clock set through the guest agent, or with it over SSH (the clock included). */
  readonly readyMs: number;
  readonly totalMs: number;
  readonly steps: ReadonlyArray<{ name: string; ms: number }>;
}

/** How long a rewound VM may take to be ready again before the rewind counts as failed (as a restore's). */
const rewindTimeoutMs = 60_000;

/**
 * How long the guest agent may take to answer after a load. A guest with it answers in about
 * 0.1 s under emulation; one without it costs this much before its clock is set over SSH.
 */
const guestAgentTimeoutMs = 1500;

/**
 * Returns the running VM to a snapshot of its disk and memory (QEMU's loadvm on the running
 * VM: no reboot), corrects the guest's clock and runs the readiness steps of a restore. What
 * was created in the cluster since the snapshot, namespaced or not, is gone; ports,
 * kubeconfig and leases stay as they are.
 *
 * Refused, with the VM untouched, when it is not running, when another run holds it (a rewind
 * would pull the cluster from under that run's tests), or when the snapshot is missing,
 * damaged or of another build. A rewind QEMU refuses, or after which the cluster does not
 * become ready, stops the VM (it may be half-restored) and throws REWIND_FAILED.
 */
export async function rewindCluster(options: RewindOptions = {}, resolved?: ResolvedConfig): Promise<RewindResult> {
  const name = options.to ?? snapshotTag;
  checkSnapshotName(name, 'restore');
  const { dir, config, logger } = await prepare(options, resolved);
  const env = environment(options.env);
  return withLock(dir, { timeoutMs: stopLockTimeoutMs, signal: options.signal }, async () => {
    const status = await deriveStatus(dir);
    if (status.state !== 'running' || !status.runtime || status.pid === undefined) {
      throw new K3sVmError('NOT_RUNNING', `there is no running VM to rewind (it is ${status.state})`, {
        hint: `start it first (npx k3s-vm start); with ${setting(config.names, 'snapshot', true)} a start restores the snapshot anyway`,
      });
    }
    const runtime = status.runtime;
    const own = new Set(options.ownLeases ?? []);
    const others = (await liveLeases(dir)).filter((lease) => lease.pid !== process.pid && !own.has(lease.id));
    if (others.length > 0) {
      throw new K3sVmError(
        'VM_IN_USE',
        `refusing to rewind the VM: ${others.length} other run(s) use it (process ${others.map((lease) => lease.pid).join(', ')}), and a rewind would undo what their tests are doing`,
        {
          hint: `rewind when this run holds the VM alone: wait for the other runs, or give this run its own state directory (${config.names.dir})`,
        },
      );
    }

    const label = name === snapshotTag ? 'the ready-state snapshot' : `snapshot ${name}`;
    const image = await runningVmImage(dir, runtime, env['PATH']);
    const record = await readSnapshotRecord(dir, name);
    const inDisk = await image.snapshots();
    const why =
      record === 'damaged'
        ? 'its record is damaged (not JSON)'
        : record === undefined
          ? name === snapshotTag
            ? `there is none (it is saved once the VM is ready, with ${setting(config.names, 'snapshot', true)})`
            : 'there is none by that name (k3s-vm snapshot ls lists them)'
          : whyNotRestorable(record, await runningVmKey(dir, runtime, image), inDisk, name);
    if (why) {
      throw new K3sVmError(
        'SNAPSHOT_REFUSED',
        `cannot rewind to ${label}: ${why.replace(/^the VM changed since/, 'the running VM differs from what it was when')}; the VM was not touched`,
        {
          hint:
            name === snapshotTag
              ? `restart the VM with ${setting(config.names, 'snapshot', true)} to save a snapshot of this VM`
              : `save it again from this VM: k3s-vm snapshot save ${name}`,
        },
      );
    }

    const privateKey = await dir.readText(files.sshKey);
    if (privateKey === undefined) {
      throw new K3sVmError('STATE_INVALID', `the instance key ${dir.file(files.sshKey)} is missing; the VM was not touched`, {
        hint: 'stop the VM and start it again (k3s-vm stop; k3s-vm start): a start makes a new key',
      });
    }
    const target = { port: runtime.sshPort, privateKey };
    const started = Date.now();
    const vmName = runtime.fingerprint['name'] ?? config.name;
    const fail = async (what: string, error: unknown): Promise<never> => {
      // After a load QEMU refused, or one after which the cluster is not ready, the VM is not
      // what it was and not what the snapshot is either: it does not run on.
      await stopInstance(dir, status, logger, true).catch((stopError: unknown) =>
        logger.warn(`stopping the VM after the failed rewind also failed: ${(stopError as Error).message}`),
      );
      throw new K3sVmError('REWIND_FAILED', `rewinding to ${label} failed: ${what}: ${(error as Error).message}; the VM was stopped`, {
        cause: error,
        hint: `start it again (npx k3s-vm start; with ${setting(config.names, 'snapshot', true)} that restores the ready-state snapshot)`,
        ...(error instanceof K3sVmError && error.details ? { details: error.details } : {}),
      });
    };
    logger.progress(`rewinding ${vmName} to ${label} (saved ${(record as SnapshotRecord).savedAt})`);
    try {
      await loadInternalSnapshot(runtime.qmpSocket, name);
    } catch (error) {
      const state = error instanceof LoadSnapshotError && error.runState ? ` (QEMU left the VM ${error.runState})` : '';
      return fail(`QEMU refused to load it${state}`, error);
    }
    const loadMs = Date.now() - started;
    const timeoutMs = Math.min(timeoutMsFor(config.timeoutSeconds, runtime.accel), rewindTimeoutMs);
    const vmGone = () => (isRunning(status.pid!) ? undefined : `QEMU (pid ${status.pid}) exited`);
    // The clock first, through the guest agent; then the API steps alone (k3sRewindSteps, with
    // the kubeconfig the runs hold): no SSH handshake is made. (Run beside the clock they end
    // no sooner: "node Ready" waits for a heartbeat after it.) A guest without the agent has
    // its clock set over SSH instead, on the connection of the first of the usual steps.
    let clockMs = 0;
    let clockBy: GuestClockBy = 'ssh';
    const wait = (steps: readonly ReadinessStep[], kubeconfig?: string) =>
      waitForReady({
        target,
        apiPort: runtime.apiPort,
        contextName: vmName,
        nodeName: vmName,
        timeoutName: config.names.timeoutSeconds,
        bootStartedAt: started,
        restoredAt: started,
        deadline: started + timeoutMs,
        steps,
        kubeconfig,
        logger,
        signal: options.signal,
        vmGone,
        serialTail: async () =>
          logTailBlock(`last lines of the serial console (${dir.file(files.serialLog)})`, await tailFile(dir.file(files.serialLog), 30)),
      });
    const clockStarted = Date.now();
    let readyStarted = clockStarted;
    let ready: ReadyCluster | undefined;
    try {
      const kubeconfig = options.readiness ? undefined : await dir.readText(files.kubeconfig);
      // QEMU has run all along, its socket open: no waiting for it to listen.
      const agentOptions = { listenUntil: 0, answerTimeoutMs: guestAgentTimeoutMs, signal: options.signal, logger, vmGone };
      if (kubeconfig !== undefined && (await correctGuestClockByAgent(runtime.qmpSocket, agentOptions))) {
        clockMs = Date.now() - clockStarted;
        clockBy = 'guest agent';
        readyStarted = Date.now();
        ready = await wait(k3sRewindSteps, kubeconfig);
      }
      ready ??= await wait(
        (options.readiness ?? k3sReadinessSteps).map((step): ReadinessStep =>
          step !== sshAnswers
            ? step
            : {
                ...step,
                async check(context) {
                  await step.check(context);
                  const clockStarted = Date.now();
                  await setGuestClock(context.ssh, context.signal, logger);
                  clockMs = Date.now() - clockStarted;
                },
              },
        ),
      );
      await keepKubeconfig(dir, ready.kubeconfig, logger);
    } catch (error) {
      return fail('the cluster did not become ready after it', error);
    }
    const stepDurations = ready.stepDurationsMs;
    const totalMs = Date.now() - started;
    logger.progress(
      `rewound ${vmName} to ${label} in ${(totalMs / 1000).toFixed(1)} s (QEMU's load ${(loadMs / 1000).toFixed(1)} s, the clock set through ${clockBy === 'ssh' ? 'SSH' : 'the guest agent'})`,
    );
    return { snapshot: name, loadMs, clockMs, clockBy, readyMs: Date.now() - readyStarted, totalMs, steps: stepDurations };
  });
}

/**
 * The kubeconfig stays the one the runs hold: the rewound guest has the same cluster (its
 * certificates are on the reverted disk), and the forwarded port is QEMU's, not the guest's.
 * Only a file that differs (a snapshot of another cluster on this disk) is written again.
 */
async function keepKubeconfig(dir: InstanceDir, kubeconfig: string, logger: Logger): Promise<void> {
  if ((await dir.readText(files.kubeconfig)) === kubeconfig) return;
  logger.warn(`the rewound cluster has another kubeconfig than before; ${dir.file(files.kubeconfig)} is written again`);
  await dir.writeAtomic(files.kubeconfig, kubeconfig, 0o600);
}
