// The readiness engine: runs an ordered list of named steps (steps.ts) that together mean "tests
// can create pods", each retried, under one deadline, reporting each step's time.
import type { KubeConfig } from '@kubernetes/client-node';
import pRetry, { AbortError } from 'p-retry';
import { K3sVmError } from '../errors.js';
import type { Logger } from '../log.js';
import type { GuestShell, SshTarget } from '../guest/ssh.js';
import { apiErrorText, loadKubeConfig } from '../kube/kubeconfig.js';

/** What the steps share: where the guest is, the connection to it, and what earlier steps found. */
export interface ReadinessContext {
  /** Where the guest's SSH server is reached (the forwarded port and the instance key); undefined for a cluster without a VM. */
  readonly target: SshTarget | undefined;
  /**
   * The guest's shell. The first step ("SSH answers") sets it; reading it before that throws,
   * so the steps after it use it as is.
   */
  ssh: GuestShell;
  /** Host port forwarded to the guest's API server (6443). */
  readonly apiPort: number;
  /** Name given to the kubeconfig's context, cluster and user (instead of K3s's `default`). */
  readonly contextName: string | undefined;
  /** This instance's node; undefined: every registered node counts. */
  readonly nodeName: string | undefined;
  /** When this boot started (epoch ms); a Ready condition last reported before it is stale. */
  readonly bootStartedAt: number | undefined;
  /**
   * When the VM was restored from a snapshot (epoch ms), undefined for a boot: "node Ready" then
   * also believes the node's Lease, renewed since, as the heartbeat (steps.ts, nodeReady).
   */
  readonly restoredAt: number | undefined;
  /** APIServices (`v1beta1.metrics.k8s.io`) that must be registered and answer before the cluster counts as ready. */
  readonly requiredApiServices: readonly string[];
  /** The overall deadline (epoch ms). */
  readonly deadline: number;
  /** Aborts when the wait ends for any reason: deadline, VM gone, outer abort. */
  readonly signal: AbortSignal;
  /** K3s's kubeconfig as the guest holds it (before it is rewritten for the host). */
  guestKubeconfig?: string;
  kubeconfig?: string;
  apiServerUrl?: string;
  kubeConfig?: KubeConfig;
  /** Registers clean-up (a connection a step opened) for when the wait ends, however it ends. */
  onEnd(cleanUp: () => void): void;
}

export interface ReadinessStep {
  readonly name: string;
  /** What to look at when this step does not pass. */
  readonly hint: string;
  /**
   * Resolves when the step holds; throws (with the reason) while it does not yet. A step that
   * waits in one attempt (a watch) rejects with what it still waits for when the signal aborts.
   */
  check(context: ReadinessContext): Promise<void>;
  /** An error that will never go away: ends the wait at once instead of retrying. */
  readonly fatal?: (error: unknown) => boolean;
  /**
   * The step only reads what an earlier step has already made available (the API): it is
   * checked together with the steps next to it that may run ahead too, and reported in its
   * turn, its time counted from the step before it. Errors still name the first step that
   * did not pass.
   */
  readonly runsAhead?: boolean;
}

export interface WaitForReadyOptions {
  /** The guest's SSH server: forwarded port and the instance key. Absent for a cluster without a VM (its steps use no SSH). */
  readonly target?: SshTarget | undefined;
  /** Host port forwarded to the guest's API server. */
  readonly apiPort: number;
  /** Name for the kubeconfig's context, cluster and user. @default K3s's `default` */
  readonly contextName?: string | undefined;
  /** This instance's node. @default any registered node */
  readonly nodeName?: string | undefined;
  /** When this boot started (Date or epoch ms): older Ready reports are stale. @default no staleness check */
  readonly bootStartedAt?: Date | number | undefined;
  /**
   * APIServices that must be registered, Available and answering ("API discovery complete"):
   * `v1beta1.metrics.k8s.io` unless metrics-server is disabled (requiredApiServicesFor). @default []
   */
  readonly requiredApiServices?: readonly string[] | undefined;
  /** The overall deadline (epoch ms). */
  readonly deadline: number;
  /**
   * How the user names the setting behind the deadline (`--timeout`, `K3S_VM_TIMEOUT`, `option
   * timeoutSeconds`): a step not ready before it gets "raise it" in its hint. @default none
   */
  readonly timeoutName?: string | undefined;
  /** When the VM was restored from a snapshot (Date or epoch ms): see ReadinessContext.restoredAt. @default a boot */
  readonly restoredAt?: Date | number | undefined;
  /**
   * The kubeconfig the host already holds for this cluster (rewritten for the host), for a list
   * without "kubeconfig present": after a rewind, the API steps use it as they are.
   */
  readonly kubeconfig?: string | undefined;
  /** In order: k3sReadinessSteps (steps.ts) for a VM, or a list composed of its steps. */
  readonly steps: readonly ReadinessStep[];
  readonly logger: Logger;
  readonly signal?: AbortSignal | undefined;
  /** A reason when the VM is gone (ends the wait at once). */
  readonly vmGone: () => string | undefined;
  /** Tail of the VM's serial log, shown with a failure. */
  readonly serialTail: () => Promise<string>;
}

export interface ReadyCluster {
  /** The rewritten kubeconfig (server https://127.0.0.1:<apiPort>). */
  readonly kubeconfig: string;
  readonly apiServerUrl: string;
  /** Elapsed time of each step, in order. */
  readonly stepDurationsMs: ReadonlyArray<{ name: string; ms: number }>;
}

/** The context the engine hands the steps: `ssh` throws until a step sets it. */
class StepContext implements ReadinessContext {
  #ssh: GuestShell | undefined;
  kubeconfig?: string;
  apiServerUrl?: string;
  kubeConfig?: KubeConfig;

  readonly #cleanUps: Array<() => void> = [];

  constructor(
    readonly target: SshTarget | undefined,
    readonly apiPort: number,
    readonly contextName: string | undefined,
    readonly nodeName: string | undefined,
    readonly bootStartedAt: number | undefined,
    readonly restoredAt: number | undefined,
    readonly requiredApiServices: readonly string[],
    readonly deadline: number,
    readonly signal: AbortSignal,
  ) {}

  onEnd(cleanUp: () => void): void {
    this.#cleanUps.push(cleanUp);
  }

  get ssh(): GuestShell {
    if (!this.#ssh) throw new Error('no SSH connection yet (the step "SSH answers" has not passed)');
    return this.#ssh;
  }

  set ssh(shell: GuestShell) {
    if (this.#ssh !== shell) this.#ssh?.close?.();
    this.#ssh = shell;
  }

  /** Closes the connections the steps opened: SSH and the API's. */
  closeConnections(): void {
    this.#ssh?.close?.();
    this.#ssh = undefined;
    for (const cleanUp of this.#cleanUps.splice(0)) cleanUp();
  }
}

/** Why the wait ended early; the engine turns it into the error. */
type Ending = { kind: 'deadline' } | { kind: 'outer' } | { kind: 'gone'; reason: string };

/**
 * Settles with the step's own outcome, or with the signal's reason once it aborts. A step that
 * reacts to the abort itself (saying what it waited for) is given a turn of the event loop first.
 */
function untilAborted(work: Promise<void>, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => setImmediate(() => reject(signal.reason));
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/**
 * Runs the steps in order, each retried with backoff capped at 150 ms (so a step is noticed
 * soon after it becomes true), all under one deadline. The VM exiting or the outer signal ends
 * the wait at once; so does an error a step calls fatal. On failure the error names the step,
 * its last error and the tail of the serial log. Closes the SSH connection the steps opened.
 */
export async function waitForReady(options: WaitForReadyOptions): Promise<ReadyCluster> {
  const { steps } = options;
  const total = steps.length;
  const controller = new AbortController();
  let ending: Ending | undefined;
  const end = (why: Ending, reason: unknown) => {
    if (ending) return;
    ending = why;
    controller.abort(reason);
  };
  const vmGone = (): string | undefined => {
    const reason = options.vmGone();
    if (reason) end({ kind: 'gone', reason }, new Error(reason));
    return reason;
  };
  const remainingMs = Math.max(0, options.deadline - Date.now());
  const deadlineTimer = setTimeout(() => end({ kind: 'deadline' }, new Error('the readiness deadline passed')), remainingMs);
  // A step can wait on one attempt for long (a watch): notice a dead VM without waiting for it.
  const goneTimer = setInterval(vmGone, 100);
  goneTimer.unref();
  const onOuterAbort = () => end({ kind: 'outer' }, options.signal?.reason);
  if (options.signal?.aborted) onOuterAbort();
  else options.signal?.addEventListener('abort', onOuterAbort, { once: true });
  const epochMs = (at: Date | number | undefined) => (at instanceof Date ? at.getTime() : at);
  const context = new StepContext(
    options.target,
    options.apiPort,
    options.contextName,
    options.nodeName,
    epochMs(options.bootStartedAt),
    epochMs(options.restoredAt),
    options.requiredApiServices ?? [],
    options.deadline,
    controller.signal,
  );
  if (options.kubeconfig !== undefined) {
    context.kubeconfig = options.kubeconfig;
    context.kubeConfig = loadKubeConfig(options.kubeconfig);
    const server = context.kubeConfig.getCurrentCluster()?.server;
    if (server !== undefined) context.apiServerUrl = server;
  }
  const durations: Array<{ name: string; ms: number }> = [];
  const label = (index: number) => `step ${index + 1} of ${total} "${steps[index]?.name}"`;
  if (total > 0) options.logger.progress(`${label(0)}: waiting (deadline ${Math.round(remainingMs / 1000)} s)`);
  /** One step's retries, started when its turn comes, or earlier for a step that may run ahead. */
  interface Run {
    readonly done: Promise<void>;
    lastError: unknown;
    fatal: boolean;
  }
  const runs = new Map<number, Run>();
  const start = (index: number): Run => {
    const existing = runs.get(index);
    if (existing) return existing;
    const step = steps[index]!;
    const run: Run = { done: Promise.resolve(), lastError: undefined, fatal: false };
    (run as { done: Promise<void> }).done = pRetry(
      async () => {
        if (vmGone()) throw controller.signal.reason;
        try {
          await untilAborted(step.check(context), controller.signal);
        } catch (error) {
          if (error !== controller.signal.reason) run.lastError = error;
          if (!controller.signal.aborted && step.fatal?.(error)) {
            run.fatal = true;
            throw new AbortError(error instanceof Error ? error : new Error(apiErrorText(error)));
          }
          // p-retry gives up on a TypeError; here every error short of a fatal one is retried.
          throw error instanceof TypeError ? new Error(error.message, { cause: error }) : error;
        }
      },
      {
        retries: Number.POSITIVE_INFINITY,
        minTimeout: 50,
        // The cap bounds how late a step that just became true is noticed.
        maxTimeout: 150,
        factor: 1.5,
        randomize: false,
        signal: controller.signal,
        unref: true,
        onFailedAttempt: () => options.logger.debug(`${label(index)}: ${apiErrorText(run.lastError)}`),
      },
    );
    // Awaited in its turn; until then a failure must not count as unhandled.
    run.done.catch(() => undefined);
    runs.set(index, run);
    return run;
  };
  try {
    let stepStarted = Date.now();
    for (const [index, step] of steps.entries()) {
      // A run of steps that may run ahead starts together: when the last of them becomes true,
      // the others have been noticed already and cost no further round trip.
      if (step.runsAhead) for (let next = index; next < total && steps[next]!.runsAhead; next++) start(next);
      const run = start(index);
      try {
        await run.done;
      } catch (error) {
        throw await failure(options, {
          label: label(index),
          step,
          ending,
          fatal: run.fatal,
          lastError: run.lastError ?? error,
          waitedMs: Date.now() - stepStarted,
        });
      }
      const ms = Date.now() - stepStarted;
      stepStarted = Date.now();
      durations.push({ name: step.name, ms });
      options.logger.progress(`ready: ${label(index)} (${(ms / 1000).toFixed(1)} s)`);
    }
  } finally {
    // Steps that ran ahead stop with the wait.
    if (!controller.signal.aborted) controller.abort(new Error('the readiness wait ended'));
    clearTimeout(deadlineTimer);
    clearInterval(goneTimer);
    options.signal?.removeEventListener('abort', onOuterAbort);
    context.closeConnections();
  }
  if (!context.kubeconfig || !context.apiServerUrl) {
    throw new K3sVmError('NOT_READY', 'the readiness steps finished without reading the kubeconfig');
  }
  return { kubeconfig: context.kubeconfig, apiServerUrl: context.apiServerUrl, stepDurationsMs: durations };
}

/** The one error shape for every step. */
async function failure(
  options: WaitForReadyOptions,
  ended: { label: string; step: ReadinessStep; ending: Ending | undefined; fatal: boolean; lastError: unknown; waitedMs: number },
): Promise<K3sVmError> {
  const { label, step, ending, lastError } = ended;
  if (ending?.kind === 'outer') {
    const reason: unknown = options.signal?.reason;
    return reason instanceof K3sVmError ? reason : new K3sVmError('ABORTED', `aborted while waiting for ${label}`, { cause: reason });
  }
  const details = await options.serialTail().catch((error: unknown) => `(the serial log could not be read: ${apiErrorText(error)})`);
  if (ending?.kind === 'gone') {
    // Asked again: by now the exit status has usually arrived as well.
    return new K3sVmError('QEMU_EXITED', `the VM stopped while waiting for ${label}: ${options.vmGone() ?? ending.reason}`, {
      details,
      hint: step.hint,
    });
  }
  const last = lastError === undefined ? 'none' : apiErrorText(lastError);
  if (ended.fatal) {
    return new K3sVmError('NOT_READY', `K3s cannot become ready (${label}); error: ${last}`, {
      details,
      // A step's fatal error may know the remedy better than the step.
      hint: (lastError instanceof K3sVmError && lastError.hint) || step.hint,
      cause: lastError,
    });
  }
  const seconds = Math.round(ended.waitedMs / 1000);
  return new K3sVmError('NOT_READY', `K3s not ready before the deadline (${label}, waited ${seconds} s); last error: ${last}`, {
    details,
    hint: options.timeoutName ? `${step.hint}; if it only needs longer, raise ${options.timeoutName}` : step.hint,
    cause: lastError,
  });
}
