// What a failed test's namespace looked like: its events, each pod's state and the tail of every container's log, bounded in size and time.
import type { KubeConfig } from '@kubernetes/client-node';
import { apiErrorText } from './kubeconfig.js';
import { describeState } from './conditions.js';
import { formatEvent, listEvents } from './events.js';
import { getJson, getText } from './target.js';
import type { KubeObject } from './watch.js';

export interface DiagnosticsOptions {
  /** The whole collection's deadline; what has not arrived by then is named as missing. @default 1500 */
  readonly budgetMs?: number;
  /** The last lines of each container's log. @default 40 */
  readonly tailLines?: number;
  /** At most this many bytes of each container's log (its end). @default 8192 */
  readonly logBytes?: number;
  /** The newest events kept. @default 30 */
  readonly events?: number;
  /** At most this many pods described (the rest are counted). @default 20 */
  readonly pods?: number;
}

export interface Diagnostics {
  readonly namespace: string;
  /** The whole report, as printed. */
  readonly text: string;
  /** One line: how many pods, events and logs it holds, and how long it took. */
  readonly summary: string;
  readonly elapsedMs: number;
}

interface PodLike extends KubeObject {
  readonly spec?: { readonly containers?: readonly { name: string }[]; readonly initContainers?: readonly { name: string }[] };
}

/** The last `bytes` of a text, cut at a line start where one is near, with a note of what was cut. */
export function tailOf(text: string, bytes: number): string {
  const buffer = Buffer.from(text, 'utf8');
  if (buffer.length <= bytes) return text;
  let cut = buffer.subarray(buffer.length - bytes).toString('utf8');
  const newline = cut.indexOf('\n');
  if (newline >= 0 && newline < 200) cut = cut.slice(newline + 1);
  return `[… ${buffer.length - Buffer.byteLength(cut)} earlier bytes cut]\n${cut}`;
}

const indent = (text: string, by = '    ') =>
  text
    .replace(/\n$/, '')
    .split('\n')
    .map((line) => `${by}${line}`)
    .join('\n');

/**
 * Collects a namespace's diagnostics within a deadline: its events (newest last), each pod's
 * phase, conditions and containers, and the last lines of every container's log. Never
 * throws: what could not be read is named in the text.
 */
export async function collectDiagnostics(
  kubeConfig: KubeConfig,
  namespace: string,
  options: DiagnosticsOptions = {},
): Promise<Diagnostics> {
  const started = Date.now();
  const budgetMs = options.budgetMs ?? 1_500;
  const tailLines = options.tailLines ?? 40;
  const logBytes = options.logBytes ?? 8_192;
  const maxPods = options.pods ?? 20;
  const signal = AbortSignal.timeout(budgetMs);
  const ns = encodeURIComponent(namespace);
  const failed = (error: unknown) => (signal.aborted ? `not read within ${budgetMs} ms` : apiErrorText(error));

  // The logs are asked for as soon as the pods are known, beside the events (not after them):
  // on a slow cluster the budget goes to the slowest chain, not to the sum of two.
  const eventsRead = listEvents(kubeConfig, namespace, { limit: options.events ?? 30, signal }).then(
    (items) => ({ items, error: undefined }),
    (error: unknown) => ({ items: [], error: failed(error) }),
  );
  const pods = await getJson<{ items?: PodLike[] }>(kubeConfig, `/api/v1/namespaces/${ns}/pods`, {}, signal).then(
    (list) => ({ items: list.items ?? [], error: undefined }),
    (error: unknown) => ({ items: [] as PodLike[], error: failed(error) }),
  );
  const shown = pods.items.slice(0, maxPods);
  const [events, logs] = await Promise.all([
    eventsRead,
    Promise.all(
      shown.flatMap((pod) => {
        const name = pod.metadata?.name ?? '?';
        const containers = [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])].map((c) => c.name);
        return containers.map((container) =>
          getText(
            kubeConfig,
            `/api/v1/namespaces/${ns}/pods/${encodeURIComponent(name)}/log`,
            { container, tailLines: String(tailLines), limitBytes: String(logBytes * 2) },
            signal,
          ).then(
            (text) => ({ pod: name, container, text: tailOf(text, logBytes), error: undefined }),
            (error: unknown) => ({ pod: name, container, text: '', error: failed(error) }),
          ),
        );
      }),
    ),
  ]);
  const elapsedMs = Date.now() - started;
  const lines: string[] = [`k3s-vm diagnostics of namespace ${namespace} (collected in ${(elapsedMs / 1000).toFixed(2)} s)`];
  lines.push(`Pods (${pods.items.length}):`);
  if (pods.error) lines.push(`  could not be listed: ${pods.error}`);
  else if (pods.items.length === 0) lines.push('  none');
  for (const pod of shown) lines.push(`  ${pod.metadata?.name}: ${describeState(pod)}`);
  if (pods.items.length > shown.length) lines.push(`  … and ${pods.items.length - shown.length} more`);
  lines.push(`Events (the last ${events.items.length}):`);
  if (events.error) lines.push(`  could not be listed: ${events.error}`);
  else if (events.items.length === 0) lines.push('  none');
  for (const event of events.items) lines.push(`  ${formatEvent(event)}`);
  if (logs.length) lines.push(`Logs (the last ${tailLines} lines of each container):`);
  for (const log of logs) {
    const body = log.error ? `(no log: ${log.error})` : log.text.trim() ? log.text : '(empty)';
    lines.push(`  ${log.pod}/${log.container}:`, indent(body));
  }
  const withLogs = logs.filter((log) => !log.error).length;
  const summary = `${pods.items.length} pod${pods.items.length === 1 ? '' : 's'}, ${events.items.length} event${events.items.length === 1 ? '' : 's'}, ${withLogs} container log${withLogs === 1 ? '' : 's'}`;
  return { namespace, text: `${lines.join('\n')}\n`, summary, elapsedMs };
}
