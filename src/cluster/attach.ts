// Attach: join a VM that is already running, after a short health check.
import { K3sVmError, throwIfAborted } from '../errors.js';
import { endpointOfJson } from '../kube/kube-http.js';
import { apiReady, guestKubeconfigPath, rewriteKubeconfig } from '../kube/kubeconfig.js';
import type { KeyPair } from '../guest/keys.js';
import { GuestSsh } from '../guest/ssh.js';
import type { Logger } from '../log.js';
import { files } from '../state/files.js';
import type { InstanceDir } from '../state/instance-dir.js';
import { takeLease } from '../state/leases.js';
import type { RuntimeRecord } from '../state/status.js';
import type { Acquired } from './boot.js';

/** How long the health check of a running VM may take before it counts as unhealthy. */
const healthCheckTimeoutMs = 5000;

export interface AttachPlan {
  readonly dir: InstanceDir;
  readonly runtime: RuntimeRecord;
  readonly keys: KeyPair;
  readonly name: string;
  /** This run asks to keep the VM. */
  readonly keep: boolean;
  /** How many other runs use the VM now. */
  readonly otherUsers: number;
  readonly logger: Logger;
  readonly signal?: AbortSignal | undefined;
}

/** Attaches to the running VM; undefined when it is not healthy (the caller restarts it). */
export async function attach(plan: AttachPlan): Promise<Acquired | undefined> {
  const { dir, runtime, logger, signal } = plan;
  const checkStarted = Date.now();
  const kubeconfig = await validKubeconfig(plan);
  if (!kubeconfig) return undefined;
  throwIfAborted(signal);
  try {
    const healthy = await apiReady(kubeconfig, AbortSignal.any([AbortSignal.timeout(healthCheckTimeoutMs), ...(signal ? [signal] : [])]));
    if (!healthy) throw new Error('/readyz did not answer ok');
  } catch (error) {
    throwIfAborted(signal);
    logger.warn(`the running VM (pid ${runtime.pid}) failed its health check (${(error as Error).message}); restarting it`);
    return undefined;
  }
  if (plan.keep && !runtime.keep) {
    // A keep run promotes the VM to kept, so no other run's teardown stops it.
    await dir.writeJson(files.runtime, { ...runtime, keep: true });
  }
  if (!runtime.keep && plan.otherUsers === 0) {
    logger.progress(
      `adopting the VM (pid ${runtime.pid}) left running by a run that ended without tearing down; it stops when this run ends`,
    );
  }
  const lease = await takeLease(dir);
  const ms = Date.now() - checkStarted;
  logger.progress(`attached to the running VM (pid ${runtime.pid}, API https://127.0.0.1:${runtime.apiPort}) in ${ms} ms`);
  return {
    runtime: { ...runtime, keep: runtime.keep || plan.keep },
    lease,
    booted: false,
    timings: { steps: [{ name: 'health check', ms }] },
    kubeconfig,
  };
}

/**
 * The kubeconfig of the running VM. A missing or damaged file in the state directory is
 * fetched again from the guest (the VM itself is fine); undefined if that fails too.
 */
async function validKubeconfig(plan: AttachPlan): Promise<string | undefined> {
  const { dir, runtime, logger } = plan;
  const text = await dir.readText(files.kubeconfig);
  if (text !== undefined && parses(text)) return text;
  logger.warn(`${dir.file(files.kubeconfig)} is ${text === undefined ? 'missing' : 'damaged'}; fetching it again from the guest`);
  let ssh: GuestSsh | undefined;
  try {
    ssh = await GuestSsh.connect({ port: runtime.sshPort, privateKey: plan.keys.privateKey }, healthCheckTimeoutMs, plan.signal);
    const guestText = await ssh.readFile(guestKubeconfigPath, { signal: plan.signal });
    if (!guestText) throw new K3sVmError('NOT_READY', `${guestKubeconfigPath} is missing in the guest`);
    const { kubeconfig } = rewriteKubeconfig(guestText, runtime.apiPort, plan.name);
    await dir.writeAtomic(files.kubeconfig, kubeconfig, 0o600);
    return kubeconfig;
  } catch (error) {
    throwIfAborted(plan.signal);
    logger.warn(`could not fetch the kubeconfig from the running VM (${(error as Error).message}); restarting it`);
    return undefined;
  } finally {
    ssh?.close();
  }
}

/** Whether the state directory's kubeconfig is one k3s-vm wrote, usable as it is. */
function parses(kubeconfig: string): boolean {
  return endpointOfJson(kubeconfig) !== undefined;
}
