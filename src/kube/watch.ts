// List-then-watch of one object: list it, watch from the list's resourceVersion, resume a dropped
// watch where it left off, list again when the server says the version is gone (410).
import { setTimeout as sleep } from 'node:timers/promises';
import type { KubeConfig } from '@kubernetes/client-node';
import { abortError } from '../errors.js';
import { clientNode } from './client-node.js';
import type { Logger } from '../log.js';
import { collectionPath, getJson, type ResolvedTarget } from './target.js';

/** An object as the API serves it (plain JSON). */
export interface KubeObject {
  readonly apiVersion?: string;
  readonly kind?: string;
  readonly metadata?: {
    readonly name?: string;
    readonly namespace?: string;
    readonly resourceVersion?: string;
    readonly generation?: number;
    readonly uid?: string;
    readonly deletionTimestamp?: string;
    readonly labels?: Readonly<Record<string, string>>;
    readonly annotations?: Readonly<Record<string, string>>;
  };
  readonly [key: string]: unknown;
}

export interface Listed {
  readonly items: readonly KubeObject[];
  readonly resourceVersion: string | undefined;
}

export interface WatchEvent {
  readonly type: string;
  readonly object: KubeObject & { readonly code?: number; readonly message?: string; readonly reason?: string };
}

/** Where the object comes from: a list, and watches from a resourceVersion. A fake in unit tests, client-node in use. */
export interface ObjectSource {
  list(signal: AbortSignal): Promise<Listed>;
  /** Opens a watch; `onEnd` is called once when it ends (with the error, if it failed). */
  watch(
    resourceVersion: string | undefined,
    onEvent: (event: WatchEvent) => void,
    onEnd: (error?: unknown) => void,
  ): Promise<{ abort(): void }>;
}

export interface FollowOptions {
  readonly signal: AbortSignal;
  /** Debug lines: each list, each watch and why it ended. */
  readonly logger?: Logger | undefined;
  /** The first pause before trying again after a failed list or watch (doubling up to 2 s). @default 100 */
  readonly retryDelayMs?: number;
  /** Whether an error of a list is worth listing again for (a dropped connection) or final (403, 404). */
  readonly isFatal?: (error: unknown) => boolean;
}

/**
 * Follows one object until `onChange` returns true: called with the object after the list and
 * after every change the watch brings (undefined while it does not exist). Ends at once, with
 * the signal's reason, when the signal aborts.
 */
export async function followObject(
  source: ObjectSource,
  onChange: (object: KubeObject | undefined) => boolean,
  options: FollowOptions,
): Promise<void> {
  const { signal } = options;
  const debug = (line: string) => options.logger?.debug(line);
  const firstDelayMs = options.retryDelayMs ?? 100;
  let delayMs = firstDelayMs;
  const pause = async () => {
    await sleep(delayMs, undefined, { signal, ref: false }).catch(() => undefined);
    delayMs = Math.min(delayMs * 2, 2_000);
  };
  for (;;) {
    if (signal.aborted) throw abortError(signal);
    let listed: Listed;
    try {
      listed = await source.list(signal);
    } catch (error) {
      if (signal.aborted) throw abortError(signal);
      if (options.isFatal?.(error)) throw error;
      debug(`list failed (${(error as Error).message}); listing again`);
      await pause();
      continue;
    }
    debug(`listed ${listed.items.length} at resourceVersion ${listed.resourceVersion}`);
    if (onChange(listed.items[0])) return;
    let resourceVersion = listed.resourceVersion;
    // Watch, and watch again from the last version seen, until done or the version is gone.
    for (;;) {
      const ending = await watchOnce(source, resourceVersion, onChange, signal);
      if (ending.resourceVersion !== undefined) resourceVersion = ending.resourceVersion;
      if (ending.outcome === 'done') return;
      if (signal.aborted) throw abortError(signal);
      if (ending.outcome === 'gone') {
        debug(`watch: resourceVersion ${resourceVersion} is gone (410); listing again`);
        break;
      }
      if (ending.outcome === 'ended') {
        delayMs = firstDelayMs;
        debug(`watch ended; resuming from resourceVersion ${resourceVersion}`);
        continue;
      }
      debug(`watch failed (${'error' in ending ? ending.error : ''}); resuming from resourceVersion ${resourceVersion}`);
      await pause();
    }
  }
}

type WatchEnding =
  | { outcome: 'done' | 'ended' | 'gone'; resourceVersion: string | undefined }
  | { outcome: 'failed'; resourceVersion: string | undefined; error: string };

function watchOnce(
  source: ObjectSource,
  from: string | undefined,
  onChange: (object: KubeObject | undefined) => boolean,
  signal: AbortSignal,
): Promise<WatchEnding> {
  return new Promise<WatchEnding>((resolve) => {
    let resourceVersion = from;
    let handle: { abort(): void } | undefined;
    let settled = false;
    const finish = (ending: WatchEnding) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      handle?.abort();
      resolve(ending);
    };
    const onAbort = () => finish({ outcome: 'failed', resourceVersion, error: 'aborted' });
    signal.addEventListener('abort', onAbort, { once: true });
    const onEvent = (event: WatchEvent) => {
      if (settled) return;
      const version = event.object?.metadata?.resourceVersion;
      if (event.type === 'ERROR') {
        const status = event.object;
        if (status.code === 410) return finish({ outcome: 'gone', resourceVersion });
        return finish({ outcome: 'failed', resourceVersion, error: `HTTP ${status.code}: ${status.message ?? status.reason ?? 'error'}` });
      }
      if (version !== undefined) resourceVersion = version;
      if (event.type === 'BOOKMARK') return;
      const object = event.type === 'DELETED' ? undefined : event.object;
      if (onChange(object)) finish({ outcome: 'done', resourceVersion });
    };
    const onEnd = (error?: unknown) => {
      if (error === undefined || error === null) return finish({ outcome: 'ended', resourceVersion });
      const code = (error as { statusCode?: number }).statusCode;
      if (code === 410) return finish({ outcome: 'gone', resourceVersion });
      finish({ outcome: 'failed', resourceVersion, error: code ? `HTTP ${code}` : ((error as Error).message ?? String(error)) });
    };
    source.watch(resourceVersion, onEvent, onEnd).then(
      (opened) => {
        handle = opened;
        if (settled) opened.abort();
      },
      (error: unknown) => onEnd(error ?? new Error('the watch could not be opened')),
    );
  });
}

/** How long one watch request lasts before the server ends it and it is resumed (client-node gives up on a silent watch after 30 s). */
export const defaultWatchSeconds = 25;

/** The source of one object through client-node: a list by name (field selector), watches of the same selection. */
export function clientNodeSource(kubeConfig: KubeConfig, target: ResolvedTarget, watchSeconds = defaultWatchSeconds): ObjectSource {
  const path = collectionPath(target);
  const fieldSelector = `metadata.name=${target.name}`;
  return {
    async list(signal) {
      const list = await getJson<{ items?: KubeObject[]; metadata?: { resourceVersion?: string } }>(
        kubeConfig,
        path,
        { fieldSelector },
        signal,
      );
      return { items: list.items ?? [], resourceVersion: list.metadata?.resourceVersion };
    },
    watch(resourceVersion, onEvent, onEnd) {
      const query = { fieldSelector, resourceVersion, allowWatchBookmarks: true, timeoutSeconds: watchSeconds };
      return new (clientNode().Watch)(kubeConfig).watch(
        path,
        query,
        (type: string, object: WatchEvent['object']) => onEvent({ type, object }),
        onEnd,
      );
    },
  };
}
