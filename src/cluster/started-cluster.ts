// The handle a user gets from startCluster: the cluster's coordinates, SSH, and stop().
import { atExit } from '../at-exit.js';
import { loadKubeConfig } from '../kube/kubeconfig.js';
import type { KeyPair } from '../guest/keys.js';
import { GuestSsh, SharedSsh } from '../guest/ssh.js';
import type { Logger } from '../log.js';
import type { ResolvedConfig } from '../config/options.js';
import { files } from '../state/files.js';
import type { InstanceDir } from '../state/instance-dir.js';
import type { Acquired } from './boot.js';
import type { StartedCluster } from './options.js';
import { releaseLease, releaseLeaseAtExit } from './release.js';
import { rewindCluster } from './rewind.js';
import { newRunId } from './run-labels.js';

export interface HandlePlan {
  readonly config: ResolvedConfig;
  readonly dir: InstanceDir;
  readonly keys: KeyPair;
  readonly acquired: Acquired;
  /** When the start began (for the total time). */
  readonly startedAt: number;
  readonly logger: Logger;
  /** The environment the start read (a rewind reads the same). */
  readonly env: Readonly<Record<string, string | undefined>>;
}

export function createStartedCluster(plan: HandlePlan): StartedCluster {
  const { config, dir, acquired, logger } = plan;
  const { runtime, kubeconfig } = acquired;
  const target = { port: runtime.sshPort, privateKey: plan.keys.privateKey };
  const shared = new SharedSsh(target);
  let stopped: Promise<{ stoppedVm: boolean }> | undefined;
  // If the process exits without stop() (a runner that calls process.exit on Ctrl-C), there
  // is no time for a graceful power-down; still leave no unkept VM without users behind.
  // The work stays until the release is done, for a runner that exits mid-release.
  const cancelExitWork = atExit(() => releaseLeaseAtExit(dir, acquired.lease.id));
  const cluster: StartedCluster = {
    kind: 'vm',
    runId: newRunId(),
    config,
    name: config.name,
    kubeconfig,
    kubeconfigPath: dir.file(files.kubeconfig),
    apiServerUrl: `https://127.0.0.1:${runtime.apiPort}`,
    apiPort: runtime.apiPort,
    sshPort: runtime.sshPort,
    pid: runtime.pid,
    accel: runtime.accel,
    booted: acquired.booted,
    timings: { ...acquired.timings, totalMs: Date.now() - plan.startedAt },
    kubeConfig: () => loadKubeConfig(kubeconfig),
    ssh: () => GuestSsh.connect(target),
    leaseId: acquired.lease.id,
    rewind: async (snapshot) => {
      // The guest's TCP connections are rewound too: the shared one would be a dead end.
      shared.close();
      try {
        return await rewindCluster(
          { env: plan.env, logger, ownLeases: [acquired.lease.id], ...(snapshot === undefined ? {} : { to: snapshot }) },
          config,
        );
      } finally {
        shared.close();
      }
    },
    exec: (command) => shared.exec(command),
    stop: () => {
      shared.close();
      return (stopped ??= releaseLease(dir, acquired.lease, logger).finally(cancelExitWork));
    },
    [Symbol.asyncDispose]: async () => {
      await cluster.stop();
    },
  };
  return cluster;
}
