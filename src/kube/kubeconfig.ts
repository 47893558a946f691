// The guest's K3s kubeconfig, rewritten to reach the API through the forwarded host port.
import type { KubeConfig } from '@kubernetes/client-node';
import { K3sVmError } from '../errors.js';
import { clientNode } from './client-node.js';
import { endpointOf, endpointOfJson, KubeHttp } from './kube-http.js';

/** Where K3s writes its admin kubeconfig in the guest. */
export const guestKubeconfigPath = '/etc/rancher/k3s/k3s.yaml';

/**
 * Parses the guest's kubeconfig with client-node, points every cluster at
 * https://127.0.0.1:<apiPort> (127.0.0.1 is in K3s's serving certificate) and
 * re-serialises it. No text editing: a kubeconfig it cannot parse is an error.
 */
export function rewriteKubeconfig(
  guestKubeconfig: string,
  apiPort: number,
  contextName?: string,
): { kubeconfig: string; apiServerUrl: string } {
  const source = new (clientNode().KubeConfig)();
  try {
    source.loadFromString(guestKubeconfig);
  } catch (error) {
    throw new K3sVmError('NOT_READY', `the guest's ${guestKubeconfigPath} is not a valid kubeconfig: ${(error as Error).message}`, {
      cause: error,
    });
  }
  if (source.clusters.length === 0 || source.users.length === 0) {
    throw new K3sVmError('NOT_READY', `the guest's ${guestKubeconfigPath} has no cluster or no user`);
  }
  const apiServerUrl = `https://127.0.0.1:${apiPort}`;
  const rename = (name: string) => (contextName && name === 'default' ? contextName : name);
  const rewritten = new (clientNode().KubeConfig)();
  rewritten.loadFromOptions({
    clusters: source.clusters.map((cluster) => ({ ...cluster, name: rename(cluster.name), server: apiServerUrl })),
    users: source.users.map((user) => ({ ...user, name: rename(user.name) })),
    contexts: source.contexts.map((context) => ({
      ...context,
      name: rename(context.name),
      cluster: rename(context.cluster),
      user: rename(context.user),
    })),
    currentContext: rename(source.getCurrentContext()),
  });
  return { kubeconfig: `${rewritten.exportConfig()}\n`, apiServerUrl };
}

/** Loads kubeconfig text into a KubeConfig. */
export function loadKubeConfig(kubeconfig: string): KubeConfig {
  const kc = new (clientNode().KubeConfig)();
  kc.loadFromString(kubeconfig);
  return kc;
}

/**
 * Whether the API server answers /readyz with ok, on a fresh TLS connection with the
 * kubeconfig's credentials. A kubeconfig k3s-vm wrote (JSON) or one with a certificate or a
 * token is checked without loading client-node, which costs more than the request; one whose
 * user needs an exec plugin or auth provider goes through client-node.
 */
export async function apiReady(kubeconfig: string | KubeConfig, signal?: AbortSignal): Promise<boolean> {
  const endpoint = typeof kubeconfig === 'string' ? endpointOfJson(kubeconfig) : endpointOf(kubeconfig);
  if (endpoint) {
    const http = new KubeHttp(endpoint);
    try {
      return await http.readyz(signal);
    } finally {
      http.close();
    }
  }
  const kc = typeof kubeconfig === 'string' ? loadKubeConfig(kubeconfig) : kubeconfig;
  return new (clientNode().Health)(kc).readyz({ signal });
}

/**
 * One line for an error from client-node, ssh2 or fetch: `HTTP <code>: <the API's message>`
 * for an API answer, else the message with its cause (undici hides the network reason there).
 */
export function apiErrorText(error: unknown): string {
  const e = error as { code?: unknown; body?: unknown; message?: string; cause?: { message?: string; code?: string } } | undefined;
  if (typeof e?.code === 'number') {
    const body = typeof e.body === 'string' ? e.body : e.body === undefined ? '' : JSON.stringify(e.body);
    let message = body;
    try {
      message = (JSON.parse(body) as { message?: string }).message ?? body;
    } catch {}
    return message ? `HTTP ${e.code}: ${message}` : `HTTP ${e.code}`;
  }
  if (typeof e !== 'object' || e === null) return String(error);
  const cause = e.cause?.message ?? e.cause?.code;
  return cause ? `${e.message ?? String(error)} (${cause})` : (e.message ?? String(error));
}
