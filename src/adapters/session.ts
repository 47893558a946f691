// One cluster per test-runner process: started once, released once, and cleaned up on Ctrl-C or SIGTERM.
import {
  openCluster,
  rewindCluster,
  setting,
  stderrLogger,
  type RewindResult,
  type Cluster,
  type ConnectedCluster,
  type StartedCluster,
  type StartOptions,
} from '../cluster/index.js';
import { isK3sVmError, K3sVmError } from '../errors.js';
import type { Logger } from '../log.js';

/** What a test process receives: plain data (see Cluster), so it can cross to workers. */
export type ProvidedCluster = Pick<
  Cluster,
  'kind' | 'name' | 'runId' | 'kubeconfig' | 'kubeconfigPath' | 'apiServerUrl' | 'apiPort' | 'booted'
> & {
  /** The VM's forwarded SSH port; undefined on an existing cluster. */
  readonly sshPort: number | undefined;
  /** What the namespace fixtures do when a test fails (the diagnostics and keepFailedNamespaces options). */
  readonly onFailure: { readonly diagnostics: boolean; readonly keepNamespace: boolean };
  /** The VM's state directory and the lease this run holds on it (what a rewind from a test worker needs); undefined on an existing cluster. */
  readonly dir: string | undefined;
  readonly leaseId: string | undefined;
  /** The resolved `rewind` option (K3S_VM_REWIND). */
  readonly rewind: 'off' | 'file';
  /** How the run named the settings a worker's remedies name (the config's names). */
  readonly names: { readonly snapshot: string; readonly kubeconfig: string };
};

export interface Session {
  readonly provided: ProvidedCluster;
  /** Releases this process's hold (stopping the VM if it was the last user and not kept). */
  release(): Promise<void>;
}

interface Slot {
  current: { promise: Promise<Session>; users: number } | undefined;
}

/**
 * One slot per process, on globalThis: a runner may load the adapter twice (Jest loads global
 * setup and teardown as separate modules), and setup must still happen once.
 */
const slot: Slot = ((globalThis as Record<symbol, unknown>)[Symbol.for('k3s-vm.session')] ??= { current: undefined }) as Slot;

const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * Starts or attaches to the cluster once per process; a second call (a runner calling global
 * setup twice) gets the same session. Signals during boot abort it (no QEMU is left behind);
 * signals afterwards release the cluster, then the signal is raised again so the runner exits
 * as it normally would.
 */
export function openSession(options: StartOptions = {}, logger?: Logger): Promise<Session> {
  if (slot.current) {
    slot.current.users++;
    return slot.current.promise;
  }
  const entry = { promise: createSession(options, logger), users: 1 };
  slot.current = entry;
  entry.promise.catch(() => {
    if (slot.current === entry) slot.current = undefined;
  });
  return entry.promise;
}

async function createSession(options: StartOptions, givenLogger: Logger | undefined): Promise<Session> {
  const logger = givenLogger ?? options.logger ?? stderrLogger(options);
  const controller = new AbortController();
  let cluster: StartedCluster | ConnectedCluster | undefined;
  let releasing: Promise<void> | undefined;

  const release = () =>
    (releasing ??= (async () => {
      for (const signal of signals) process.off(signal, onSignal);
      if (cluster) await cluster.stop();
    })());

  let booting: Promise<StartedCluster | ConnectedCluster> | undefined;
  function onSignal(signal: NodeJS.Signals): void {
    logger.warn(`${signal} received: ${cluster ? 'releasing the cluster' : 'aborting the boot'}`);
    let cleanup: Promise<unknown>;
    if (cluster) cleanup = release();
    else {
      // The boot cleans up after itself (it stops the VM it launched) once aborted.
      controller.abort(new K3sVmError('ABORTED', `boot aborted by ${signal}`));
      cleanup = booting ?? Promise.resolve();
    }
    void cleanup
      .catch((error: unknown) => {
        if (!isK3sVmError(error, 'ABORTED')) logger.warn(`cleanup after ${signal} failed: ${(error as Error).message}`);
      })
      .finally(() => {
        for (const each of signals) process.off(each, onSignal);
        // With our handler gone, the signal does what it would have done without us.
        if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
      });
  }
  for (const signal of signals) process.on(signal, onSignal);

  try {
    booting = openCluster({ ...options, logger, signal: controller.signal });
    cluster = await booting;
  } catch (error) {
    for (const signal of signals) process.off(signal, onSignal);
    throw error;
  }
  if (controller.signal.aborted) {
    // The boot finished just as a signal arrived: hand the cluster back at once.
    await release();
    throw controller.signal.reason;
  }
  const provided: ProvidedCluster = {
    kind: cluster.kind,
    runId: cluster.runId,
    name: cluster.name,
    kubeconfig: cluster.kubeconfig,
    kubeconfigPath: cluster.kubeconfigPath,
    apiServerUrl: cluster.apiServerUrl,
    apiPort: cluster.apiPort,
    sshPort: cluster.kind === 'vm' ? cluster.sshPort : undefined,
    booted: cluster.booted,
    onFailure: { diagnostics: cluster.config.diagnostics, keepNamespace: cluster.config.keepFailedNamespaces },
    dir: cluster.kind === 'vm' ? cluster.config.dir : undefined,
    leaseId: cluster.kind === 'vm' ? cluster.leaseId : undefined,
    rewind: cluster.config.rewind,
    names: { snapshot: cluster.config.names.snapshot, kubeconfig: cluster.config.names.kubeconfig },
  };
  return { provided, release };
}

/** Ends one use of the session; the last one releases the cluster. */
export async function closeSession(): Promise<void> {
  const entry = slot.current;
  if (!entry) return;
  entry.users--;
  if (entry.users > 0) return;
  slot.current = undefined;
  const session = await entry.promise.catch(() => undefined);
  await session?.release();
}

/**
 * Rewinds the provided VM from a test process (a worker of the run that holds it): this run's
 * lease is its own, any other run's refuses the rewind (VM_IN_USE).
 */
export async function rewindProvided(provided: ProvidedCluster, to?: string): Promise<RewindResult> {
  if (provided.dir === undefined || provided.leaseId === undefined) {
    throw new K3sVmError('NOT_RUNNING', `k3s-vm: there is no VM to rewind: the run uses the existing cluster ${provided.name}`, {
      hint: `rewind needs the VM and its snapshot (${setting(provided.names, 'snapshot', true)}); leave ${provided.names.kubeconfig} out, or isolate tests with namespaces`,
    });
  }
  // The run resolved its options already (some may have come from code, out of this process's
  // reach): only the state directory is needed, and the rewind option must not be judged again.
  const options = { dir: provided.dir, rewind: 'off' } as const;
  return rewindCluster({ ...options, logger: stderrLogger(options), ownLeases: [provided.leaseId], ...(to === undefined ? {} : { to }) });
}
