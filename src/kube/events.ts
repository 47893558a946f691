// Events (core/v1): the last ones of an object or of a namespace, as lines for messages and diagnostics.
import type { KubeConfig } from '@kubernetes/client-node';
import { getJson } from './target.js';

interface EventLike {
  readonly type?: string;
  readonly reason?: string;
  readonly message?: string;
  readonly count?: number;
  readonly lastTimestamp?: string | null;
  readonly eventTime?: string | null;
  readonly firstTimestamp?: string | null;
  readonly metadata?: { readonly creationTimestamp?: string };
  readonly involvedObject?: { readonly kind?: string; readonly name?: string };
  readonly series?: { readonly count?: number; readonly lastObservedTime?: string };
}

function timeOf(event: EventLike): number {
  const text =
    event.series?.lastObservedTime ?? event.lastTimestamp ?? event.eventTime ?? event.firstTimestamp ?? event.metadata?.creationTimestamp;
  const ms = text ? Date.parse(text) : Number.NaN;
  return Number.isNaN(ms) ? 0 : ms;
}

/** One event as a line: `12:01:02 Warning BackOff Pod/web: Back-off restarting failed container (×3)`. */
export function formatEvent(event: EventLike, withObject = true): string {
  const ms = timeOf(event);
  const time = ms ? new Date(ms).toISOString().slice(11, 19) : '--:--:--';
  const count = event.series?.count ?? event.count;
  const object = withObject && event.involvedObject ? ` ${event.involvedObject.kind}/${event.involvedObject.name}` : '';
  return `${time} ${event.type ?? 'Normal'} ${event.reason ?? ''}${object}: ${(event.message ?? '').trim()}${count && count > 1 ? ` (×${count})` : ''}`;
}

/** The events of a namespace (or of one object in it), oldest first, at most `limit` of the newest. */
export async function listEvents(
  kubeConfig: KubeConfig,
  namespace: string,
  options: { readonly kind?: string; readonly name?: string; readonly limit?: number; readonly signal?: AbortSignal } = {},
): Promise<EventLike[]> {
  const selectors = [
    ...(options.kind ? [`involvedObject.kind=${options.kind}`] : []),
    ...(options.name ? [`involvedObject.name=${options.name}`] : []),
  ];
  const query: Record<string, string> = selectors.length ? { fieldSelector: selectors.join(',') } : {};
  const list = await getJson<{ items?: EventLike[] }>(
    kubeConfig,
    `/api/v1/namespaces/${encodeURIComponent(namespace)}/events`,
    query,
    options.signal,
  );
  const sorted = [...(list.items ?? [])].sort((a, b) => timeOf(a) - timeOf(b));
  return options.limit === undefined ? sorted : sorted.slice(-options.limit);
}
