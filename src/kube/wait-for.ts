// waitFor: until an object satisfies a condition, by list-then-watch; a timeout says what was last seen.
import type { KubeConfig } from '@kubernetes/client-node';
import { abortError, K3sVmError } from '../errors.js';
import { apiErrorText } from './kubeconfig.js';
import type { Logger } from '../log.js';
import { describeCondition, describeState, type Condition } from './conditions.js';
import { formatEvent, listEvents } from './events.js';
import { collectionPath, describeTarget, getJson, resolveTarget, type ObjectTarget, type ResolvedTarget } from './target.js';
import { clientNodeSource, defaultWatchSeconds, followObject, type KubeObject } from './watch.js';

export interface WaitOptions {
  /** How long to wait. @default 60_000 */
  readonly timeoutMs?: number;
  /** Ends the wait at once (Vitest's test context `signal` does when the test times out). */
  readonly signal?: AbortSignal | undefined;
  /** Debug lines of the lists and watches. */
  readonly logger?: Logger | undefined;
  /** How long one watch request lasts before it is resumed from where it was. @default 25 */
  readonly watchSeconds?: number;
}

/** The default of `timeoutMs`. */
export const defaultWaitTimeoutMs = 60_000;

/** How long a failed wait may spend finding the object's events for its message. */
const explainBudgetMs = 2_000;

/** HTTP statuses that listing again cannot mend. */
const fatalStatuses = new Set([400, 401, 403, 404, 405, 422]);

/**
 * Waits until the object satisfies the condition, and returns it as it was then (undefined
 * for `deleted`). The object is listed once and then watched, not polled; a watch that drops
 * is resumed from the last version seen, and the object is listed again when that version is
 * gone. A timeout (WAIT_TIMEOUT), a condition that can no longer hold (WAIT_FAILED) or the
 * signal (ABORTED) end it with an error naming the object and what was last seen of it:
 * phase, conditions, containers, and the object's last events.
 *
 * @example await waitFor(kubeConfig, { kind: 'Pod', name: 'web', namespace }, podReady, { timeoutMs: 30_000 });
 */
export async function waitFor<T = KubeObject>(
  kubeConfig: KubeConfig,
  target: ObjectTarget,
  condition: Condition<T>,
  options: WaitOptions = {},
): Promise<T | undefined> {
  if (typeof condition !== 'function')
    throw new K3sVmError('TARGET_INVALID', `waitFor(${describeTarget(target)}) needs a condition: a function of the object`, {
      hint: "use one of k3s-vm's conditions (podReady, deploymentAvailable, jobComplete, deleted, …) or (object) => boolean",
    });
  const timeoutMs = options.timeoutMs ?? defaultWaitTimeoutMs;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0)
    throw new K3sVmError(
      'TARGET_INVALID',
      `waitFor(${describeTarget(target)}): timeoutMs ${timeoutMs} is not a positive number of milliseconds`,
    );
  const outer = options.signal;
  if (outer?.aborted) throw abortError(outer);
  const resolved = await resolveTarget(kubeConfig, target);
  const what = describeCondition(condition as Condition<never>);
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort('timeout'), timeoutMs);
  timer.unref();
  const onOuterAbort = () => controller.abort('signal');
  outer?.addEventListener('abort', onOuterAbort, { once: true });
  const started = Date.now();
  let last: KubeObject | undefined;
  let seen = false;
  let verdictFailed: string | undefined;
  let result: T | undefined;
  try {
    await followObject(
      clientNodeSource(kubeConfig, resolved, options.watchSeconds ?? defaultWatchSeconds),
      (object) => {
        last = object;
        if (object) seen = true;
        const verdict = condition(object as T | undefined);
        if (verdict === true) {
          result = object as T | undefined;
          return true;
        }
        if (typeof verdict === 'object' && verdict !== null) {
          verdictFailed = verdict.failed;
          return true;
        }
        return false;
      },
      {
        signal: controller.signal,
        logger: options.logger,
        isFatal: (error) => fatalStatuses.has((error as { code?: number }).code ?? 0),
      },
    );
  } catch (error) {
    if (!controller.signal.aborted)
      throw new K3sVmError(
        'KUBE_REQUEST_FAILED',
        `waiting for ${describeTarget(resolved)} to be ${what}: the API refused: ${apiErrorText(error)}`,
        {
          cause: error,
          hint: 'check the target (kind, apiVersion, namespace) and that the kubeconfig may list and watch it',
        },
      );
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    if (controller.signal.reason === 'signal') {
      const reason = outer ? abortError(outer) : undefined;
      throw new K3sVmError(
        'ABORTED',
        `waiting for ${describeTarget(resolved)} to be ${what} was aborted after ${seconds} s; last seen: ${describeState(last)}`,
        {
          cause: reason?.cause ?? reason,
        },
      );
    }
    const explanation = await explain(kubeConfig, resolved, last, seen);
    throw new K3sVmError('WAIT_TIMEOUT', `${describeTarget(resolved)} is not ${what} after ${seconds} s; last seen: ${explanation}`, {
      hint: 'the events and states above say what the cluster did; raise timeoutMs if it was merely slow',
    });
  } finally {
    clearTimeout(timer);
    outer?.removeEventListener('abort', onOuterAbort);
  }
  if (verdictFailed !== undefined) {
    const explanation = await explain(kubeConfig, resolved, last, seen);
    throw new K3sVmError('WAIT_FAILED', `${describeTarget(resolved)} will not be ${what}: ${verdictFailed}; last seen: ${explanation}`);
  }
  return result;
}

/**
 * What was last seen of the object, with its last events, or (never seen) which objects of
 * its kind the namespace has instead; within a short budget, so a failing wait fails promptly.
 */
async function explain(kubeConfig: KubeConfig, target: ResolvedTarget, last: KubeObject | undefined, seen: boolean): Promise<string> {
  const signal = AbortSignal.timeout(explainBudgetMs);
  const state = describeState(last);
  try {
    if (!last && !seen) {
      const others = await getJson<{ items?: KubeObject[] }>(kubeConfig, collectionPath(target), { limit: '20' }, signal);
      const names = (others.items ?? []).map((item) => item.metadata?.name).filter(Boolean);
      const where = target.namespace ? `namespace ${target.namespace}` : 'cluster';
      return `${state}: the ${where} has ${names.length ? `the ${target.plural} ${names.join(', ')}` : `no ${target.plural}`}`;
    }
    if (!target.namespace) return state;
    const events = await listEvents(kubeConfig, target.namespace, { kind: target.kind, name: target.name, limit: 5, signal });
    return events.length
      ? `${state}; its last events:\n  ${events.map((e) => formatEvent(e, false)).join('\n  ')}`
      : `${state}; it has no events`;
  } catch (error) {
    return `${state} (its events could not be read: ${apiErrorText(error)})`;
  }
}
