// References to Kubernetes objects ({ kind, name, namespace }), checked and resolved to API paths.
import type { ApiConstructor, KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import { K3sVmError } from '../errors.js';
import { apiErrorText } from './kubeconfig.js';
import { clientNode } from './client-node.js';

/** The object a helper acts on: the shape every test helper takes. */
export interface ObjectTarget {
  /** The object's kind, such as `Pod`, `Deployment` or `Job`. */
  readonly kind: string;
  readonly name: string;
  /** The object's namespace; required for a namespaced kind, absent for a cluster-scoped one. */
  readonly namespace?: string | undefined;
  /** The kind's `group/version` (`v1` for the core group); needed only for a kind k3s-vm does not know (a custom resource). */
  readonly apiVersion?: string | undefined;
}

/** A Pod reference; `kind` may be left out. */
export interface PodTarget {
  readonly kind?: 'Pod';
  readonly name: string;
  readonly namespace: string;
}

/** A target whose kind is known: where its collection is and how to name it in messages. */
export interface ResolvedTarget {
  readonly kind: string;
  readonly name: string;
  readonly namespace: string | undefined;
  readonly apiVersion: string;
  /** The resource's plural name (`pods`). */
  readonly plural: string;
  readonly namespaced: boolean;
}

interface KnownKind {
  readonly apiVersion: string;
  readonly plural: string;
  readonly namespaced: boolean;
}

/** The built-in kinds tests use most; any other kind needs its apiVersion and is looked up by discovery. */
const knownKinds: Readonly<Record<string, KnownKind>> = {
  Pod: { apiVersion: 'v1', plural: 'pods', namespaced: true },
  Service: { apiVersion: 'v1', plural: 'services', namespaced: true },
  ConfigMap: { apiVersion: 'v1', plural: 'configmaps', namespaced: true },
  Secret: { apiVersion: 'v1', plural: 'secrets', namespaced: true },
  ServiceAccount: { apiVersion: 'v1', plural: 'serviceaccounts', namespaced: true },
  PersistentVolumeClaim: { apiVersion: 'v1', plural: 'persistentvolumeclaims', namespaced: true },
  Endpoints: { apiVersion: 'v1', plural: 'endpoints', namespaced: true },
  Event: { apiVersion: 'v1', plural: 'events', namespaced: true },
  Namespace: { apiVersion: 'v1', plural: 'namespaces', namespaced: false },
  Node: { apiVersion: 'v1', plural: 'nodes', namespaced: false },
  PersistentVolume: { apiVersion: 'v1', plural: 'persistentvolumes', namespaced: false },
  Deployment: { apiVersion: 'apps/v1', plural: 'deployments', namespaced: true },
  StatefulSet: { apiVersion: 'apps/v1', plural: 'statefulsets', namespaced: true },
  DaemonSet: { apiVersion: 'apps/v1', plural: 'daemonsets', namespaced: true },
  ReplicaSet: { apiVersion: 'apps/v1', plural: 'replicasets', namespaced: true },
  Job: { apiVersion: 'batch/v1', plural: 'jobs', namespaced: true },
  CronJob: { apiVersion: 'batch/v1', plural: 'cronjobs', namespaced: true },
  Ingress: { apiVersion: 'networking.k8s.io/v1', plural: 'ingresses', namespaced: true },
  NetworkPolicy: { apiVersion: 'networking.k8s.io/v1', plural: 'networkpolicies', namespaced: true },
  EndpointSlice: { apiVersion: 'discovery.k8s.io/v1', plural: 'endpointslices', namespaced: true },
  CustomResourceDefinition: { apiVersion: 'apiextensions.k8s.io/v1', plural: 'customresourcedefinitions', namespaced: false },
};

/** Whether a kind is one of the built-in cluster-scoped kinds (Node, Namespace, …), which take no namespace. */
export function isClusterScopedKind(kind: string): boolean {
  const known = Object.entries(knownKinds).find(([name]) => name.toLowerCase() === kind.toLowerCase())?.[1];
  return known !== undefined && !known.namespaced;
}

/** `Pod ns/name` (or `Node name`): how messages name a target. */
export function describeTarget(target: Pick<ObjectTarget, 'kind' | 'name' | 'namespace'>): string {
  return `${target.kind} ${target.namespace ? `${target.namespace}/` : ''}${target.name}`;
}

function invalid(target: unknown, problem: string, hint: string): K3sVmError {
  let shown: string;
  try {
    shown = JSON.stringify(target) ?? String(target);
  } catch {
    shown = String(target);
  }
  return new K3sVmError('TARGET_INVALID', `the target ${shown} ${problem}`, { hint });
}

const shapeHint =
  "a target is { kind, name, namespace } (apiVersion too for a custom kind), such as { kind: 'Pod', name: 'web', namespace }";

/**
 * Checks a target's shape and resolves a kind k3s-vm knows without asking the cluster; a kind it
 * does not know comes back with `plural` undefined (the cluster's discovery then decides).
 * The kind of a known kind is matched regardless of case (`pod` is `Pod`).
 */
export function checkTarget(target: ObjectTarget): Omit<ResolvedTarget, 'plural' | 'namespaced'> & Partial<KnownKind> {
  if (typeof target !== 'object' || target === null) throw invalid(target, 'is not an object', shapeHint);
  const { kind, name, namespace, apiVersion } = target as unknown as Record<string, unknown>;
  if (typeof kind !== 'string' || kind === '') throw invalid(target, 'has no kind', shapeHint);
  if (typeof name !== 'string' || name === '') throw invalid(target, 'has no name', shapeHint);
  if (namespace !== undefined && (typeof namespace !== 'string' || namespace === ''))
    throw invalid(target, 'has a namespace that is not a non-empty string', shapeHint);
  if (apiVersion !== undefined && (typeof apiVersion !== 'string' || !/^([a-z0-9.-]+\/)?v[0-9a-z]+$/.test(apiVersion)))
    throw invalid(target, "has an apiVersion that is not 'group/version' or 'v1'", shapeHint);
  const knownName = Object.keys(knownKinds).find((known) => known.toLowerCase() === kind.toLowerCase());
  const known = knownName === undefined ? undefined : knownKinds[knownName];
  if (known && (apiVersion === undefined || apiVersion === known.apiVersion)) {
    if (known.namespaced && namespace === undefined)
      throw invalid(
        target,
        `has no namespace, and a ${knownName} is namespaced`,
        `add the namespace: { kind: '${knownName}', name: '${name}', namespace: '…' }`,
      );
    if (!known.namespaced && namespace !== undefined)
      throw invalid(target, `has a namespace, and a ${knownName} is cluster-scoped`, 'leave out the namespace');
    return { kind: knownName!, name, namespace: namespace as string | undefined, ...known };
  }
  if (apiVersion === undefined)
    throw invalid(
      target,
      `names a kind k3s-vm does not know without its apiVersion`,
      `add the kind's apiVersion, such as { kind: '${kind}', apiVersion: 'example.com/v1', … }; known without one: ${Object.keys(knownKinds).join(', ')}`,
    );
  return { kind, name, namespace: namespace as string | undefined, apiVersion };
}

/** The API path of a target's collection (in its namespace): what is listed and watched. */
export function collectionPath(target: Pick<ResolvedTarget, 'apiVersion' | 'plural' | 'namespaced' | 'namespace'>): string {
  const root = target.apiVersion.includes('/') ? `/apis/${target.apiVersion}` : `/api/${target.apiVersion}`;
  const scope = target.namespaced ? `/namespaces/${encodeURIComponent(target.namespace ?? '')}` : '';
  return `${root}${scope}/${target.plural}`;
}

/**
 * Resolves a target: a known kind at once, any other through the cluster's discovery (the
 * resource's plural and scope), with an error naming the kinds the group version has when
 * the kind is not among them.
 */
export async function resolveTarget(kubeConfig: KubeConfig, target: ObjectTarget): Promise<ResolvedTarget> {
  const checked = checkTarget(target);
  if (checked.plural !== undefined && checked.namespaced !== undefined) return checked as ResolvedTarget;
  const { apiVersion, kind } = checked;
  const path = apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
  let resources: { kind: string; name: string; namespaced: boolean }[];
  try {
    const list = await getJson<{ resources?: { kind: string; name: string; namespaced: boolean }[] }>(kubeConfig, path);
    resources = list.resources ?? [];
  } catch (error) {
    if ((error as { code?: number }).code === 404)
      throw new K3sVmError('TARGET_INVALID', `${describeTarget(checked)}: the cluster serves no API ${apiVersion}`, {
        cause: error,
        hint: 'check the apiVersion, and that the CustomResourceDefinition is installed and Established',
      });
    throw new K3sVmError('KUBE_REQUEST_FAILED', `looking up the kind ${kind} in ${apiVersion} failed: ${apiErrorText(error)}`, {
      cause: error,
    });
  }
  const resource = resources.find((r) => r.kind === kind && !r.name.includes('/'));
  if (!resource) {
    const kinds = [...new Set(resources.filter((r) => !r.name.includes('/')).map((r) => r.kind))];
    throw new K3sVmError(
      'TARGET_INVALID',
      `${describeTarget(checked)}: ${apiVersion} has no kind ${kind}; it has ${kinds.join(', ') || 'no kinds'}`,
      {
        hint: 'kinds are case-sensitive and singular, as in the object’s own `kind` field',
      },
    );
  }
  if (resource.namespaced && checked.namespace === undefined)
    throw invalid(target, `has no namespace, and a ${kind} is namespaced`, 'add the namespace');
  if (!resource.namespaced && checked.namespace !== undefined)
    throw invalid(target, `has a namespace, and a ${kind} is cluster-scoped`, 'leave out the namespace');
  return { ...checked, plural: resource.name, namespaced: resource.namespaced };
}

/** A GET of an API path as JSON, authenticated as client-node would (tokens, certificates, exec plugins). */
export async function getJson<T>(
  kubeConfig: KubeConfig,
  path: string,
  query: Record<string, string> = {},
  signal?: AbortSignal,
): Promise<T> {
  return JSON.parse(await getText(kubeConfig, path, query, signal, 'application/json')) as T;
}

/** A GET of an API path as text (a log). */
export async function getText(
  kubeConfig: KubeConfig,
  path: string,
  query: Record<string, string> = {},
  signal?: AbortSignal,
  accept = '*/*',
): Promise<string> {
  return kubeConfig.makeApiClient(rawApi()).getPath(path, query, signal, accept);
}

interface RawApi {
  getPath(path: string, query: Record<string, string>, signal: AbortSignal | undefined, accept: string): Promise<string>;
}

let rawApiClass: ApiConstructor<RawApi> | undefined;

/**
 * client-node's generic object client, given one public method: a GET of any path through
 * the client's own configured HTTP stack (the class is made on first use, so loading this
 * module does not load client-node).
 */
function rawApi(): ApiConstructor<RawApi> {
  if (rawApiClass) return rawApiClass;
  const { KubernetesObjectApi } = clientNode();
  class Raw extends KubernetesObjectApi implements RawApi {
    async getPath(path: string, query: Record<string, string>, signal: AbortSignal | undefined, accept: string): Promise<string> {
      const server = this.configuration.baseServer;
      const context = server.makeRequestContext(path, 'GET' as never);
      for (const [key, value] of Object.entries(query)) context.setQueryParam(key, value);
      context.setHeaderParam('Accept', accept);
      if (signal) context.setSignal(signal);
      // As client-node's own requests: the bearer token (if any), then the kubeconfig's user.
      await this.configuration.authMethods.BearerToken?.applySecurityAuthentication(context);
      await this.configuration.authMethods.default?.applySecurityAuthentication(context);
      const response = await this.configuration.httpApi.send(context).toPromise();
      const body = await response.body.text();
      if (response.httpStatusCode < 200 || response.httpStatusCode > 299) {
        throw new (clientNode().ApiException)(
          response.httpStatusCode,
          `HTTP ${response.httpStatusCode} from GET ${path}`,
          body,
          response.headers,
        );
      }
      return body;
    }
  }
  rawApiClass = Raw;
  return rawApiClass;
}

/** The object client of client-node for a kube config. */
export function objectApi(kubeConfig: KubeConfig) {
  return kubeConfig.makeApiClient(clientNode().KubernetesObjectApi);
}

export type { KubernetesObject };
