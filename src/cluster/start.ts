// Start-or-attach: the operation the test runners call. Boots the VM, or joins the one already running.
import { fingerprintDifferences, runtimeFingerprint } from '../config/fingerprint.js';
import type { ResolvedConfig } from '../config/options.js';
import { environment } from '../config/resolve-config.js';
import { K3sVmError } from '../errors.js';
import { ensureKeyPair } from '../guest/keys.js';
import { liveLeases } from '../state/leases.js';
import { withLock } from '../state/lock.js';
import { deriveStatus } from '../state/status.js';
import { attach } from './attach.js';
import { boot, type Acquired } from './boot.js';
import { silentLogger } from '../log.js';
import { connectExisting } from './existing.js';
import type { ConnectedCluster, StartedCluster, StartOptions } from './options.js';
import { configOf, prepare, startLockTimeoutMs } from './prepare.js';
import { createStartedCluster } from './started-cluster.js';
import { stopInstance } from './stop.js';
import { checkWorkload, withConfiguredWorkload } from './workload.js';
import { saveSnapshot } from './snapshot.js';
import { sameWorkload, type SnapshotWorkload } from '../qemu/snapshot.js';

/**
 * Starts the VM or attaches to the one already running for this state directory, waits until
 * the cluster can take work, and returns it. Every user holds a lease; see StartedCluster.stop.
 */
export async function startCluster(options: StartOptions = {}): Promise<StartedCluster> {
  const startedAt = Date.now();
  const resolved = configOf(options);
  if (resolved.kubeconfig) {
    throw new K3sVmError(
      'CONFIG_INVALID',
      `there is no VM to start: ${resolved.names.kubeconfig} names an existing cluster (${resolved.kubeconfig})`,
      {
        hint: `leave ${resolved.names.kubeconfig} out to boot a VM; the test runners (and openCluster) use the existing cluster as it is`,
      },
    );
  }
  return startVm(options, resolved, startedAt);
}

/** startCluster with the config already resolved (and naming no existing cluster). */
async function startVm(options: StartOptions, resolved: ResolvedConfig, startedAt: number): Promise<StartedCluster> {
  const { config, dir, logger } = await prepare(options, resolved);
  const signal = options.signal;
  // A missing archive or a broken manifest is reported before anything boots.
  const checked = await checkWorkload(config, signal);
  const workload = workloadOf(checked, config.waitForRollout);
  const onWait = (pid: number) => logger.progress(`waiting for process ${pid}, which is starting or stopping the VM`);

  const { keys, acquired } = await withLock(dir, { timeoutMs: startLockTimeoutMs, signal, onWait }, async () => {
    // Under the lock: two first runs must not each make a key pair.
    const keys = await ensureKeyPair(dir, `k3s-vm@${config.name}`);
    let keep = options.keep ?? config.keep;
    const status = await deriveStatus(dir);
    let acquired: Acquired | undefined;
    if (status.state === 'running' && status.runtime) {
      const differences = fingerprintDifferences(status.runtime.fingerprint, runtimeFingerprint(config));
      const others = await liveLeases(dir);
      if (differences.length === 0) {
        acquired = await attach({ dir, runtime: status.runtime, keys, name: config.name, keep, otherUsers: others.length, logger, signal });
      } else if (others.length > 0) {
        throw new K3sVmError(
          'CONFIG_MISMATCH',
          `the running VM's configuration differs and ${others.length} other run(s) still use it:\n  ${differences.join('\n  ')}`,
          {
            hint: `wait for the other runs to finish, or use another state directory (${config.names.dir}) for this configuration`,
          },
        );
      } else {
        logger.progress(`restarting the VM because its configuration changed:\n  ${differences.join('\n  ')}`);
      }
      if (!acquired) {
        // A restart never turns a kept VM into one this run's teardown stops.
        keep ||= status.runtime.keep;
        await stopInstance(dir, status, logger, false);
      }
    } else if (status.state === 'broken') {
      logger.warn(`cleaning up after the last VM: ${status.reasons.join('; ')}`);
      await stopInstance(dir, status, logger, true);
    }
    acquired ??= await boot({
      config,
      dir,
      keys,
      keep,
      steps: options.readiness,
      logger,
      signal,
      env: environment(options.env),
      // With a workload, the snapshot is saved once it is loaded (below), so that it holds it.
      saveWhenReady: workload === undefined,
    });
    return { keys, acquired };
  });

  const snapshot = workload ? acquired.snapshot : undefined;
  if (snapshot?.restored) {
    logger.progress(
      sameWorkload(snapshot.restored.workload, workload!)
        ? `the restored snapshot holds the workload (${describeWorkload(workload!)}): nothing is imported or applied`
        : `the workload changed since the snapshot was saved: what changed is loaded into the restored cluster, then the snapshot saved again`,
    );
  }
  const cluster = await withConfiguredWorkload(
    createStartedCluster({ config, dir, keys, acquired, startedAt, logger, env: environment(options.env) }),
    logger,
    signal,
  );
  if (snapshot && !sameWorkload(snapshot.restored?.workload, workload!)) {
    // Under the lock, as at boot: no other start attaches or rewinds while the VM is paused for it.
    try {
      await withLock(dir, { timeoutMs: startLockTimeoutMs, signal, onWait }, () =>
        saveSnapshot({ ...snapshot.context, qmpSocket: acquired.runtime.qmpSocket, pid: acquired.runtime.pid, workload }),
      );
    } catch (error) {
      // QEMU is gone, or the save filled the file system: as after a failed boot, this start's
      // VM does not outlive it, kept or not.
      await cluster.stop().catch(() => undefined);
      await withLock(dir, { timeoutMs: startLockTimeoutMs }, async () => {
        const status = await deriveStatus(dir);
        if (status.state !== 'stopped') await stopInstance(dir, status, logger, true);
      }).catch((cleanupError: unknown) => logger.warn(`cleaning up the failed VM also failed: ${(cleanupError as Error).message}`));
      throw error;
    }
  }
  return cluster;
}

/** What the snapshot records of the workload; undefined when there is none. */
function workloadOf(checked: Awaited<ReturnType<typeof checkWorkload>>, waitForRollout: boolean): SnapshotWorkload | undefined {
  if (checked.archives.length === 0 && checked.manifests.length === 0) return undefined;
  return {
    images: checked.archives.map((archive) => archive.digest),
    manifests: checked.manifests.map((manifest) => manifest.digest),
    waitForRollout,
  };
}

function describeWorkload(workload: SnapshotWorkload): string {
  const count = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;
  return `${count(workload.images.length, 'image')}, ${count(workload.manifests.length, 'manifest file')}`;
}

/**
 * The cluster a test run uses: the existing one of K3S_VM_KUBECONFIG (no VM, no state
 * directory), or the VM, started or attached to. What the test runners call.
 */
export async function openCluster(options: StartOptions = {}): Promise<StartedCluster | ConnectedCluster> {
  const startedAt = Date.now();
  const config = configOf(options);
  if (!config.kubeconfig) return startVm(options, config, startedAt);
  const logger = options.logger ?? silentLogger;
  await checkWorkload(config, options.signal);
  // The connection is timed from here: the workload check (archive digests) is not part of it.
  const connectedFrom = Date.now();
  return withConfiguredWorkload(
    await connectExisting({ config, logger, signal: options.signal, startedAt: connectedFrom }),
    logger,
    options.signal,
  );
}
