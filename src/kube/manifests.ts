// Manifests into the cluster: files read and checked whole, then server-side applied document by document; CRDs waited for.
import { createHash } from 'node:crypto';
import { readdir, readFile, readlink, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { KubeConfig, KubernetesObject, KubernetesObjectApi } from '@kubernetes/client-node';
import { isScalar, LineCounter, parseAllDocuments } from 'yaml';
import { K3sVmError, throwIfAborted } from '../errors.js';
import { clientNode } from './client-node.js';
import { apiErrorText } from './kubeconfig.js';

/** The field manager of every apply: `kubectl get … --show-managed-fields` names k3s-vm as the owner. */
export const fieldManager = 'k3s-vm';

/** Like the image markers: one per applied file content, on the persistent disk. */
export const guestManifestMarkerDir = '/var/lib/k3s-vm/manifests';

/** The file names a directory contributes (as kubectl -f DIR takes them). */
const manifestExtensions = /\.(ya?ml|json)$/i;

export interface ManifestDocument {
  /** 1-based position of the document in its file (a List's items count as their List's position). */
  readonly index: number;
  /** 1-based line where the document starts. */
  readonly line: number;
  readonly object: KubernetesObject;
}

export interface ManifestFile {
  readonly path: string;
  readonly bytes: number;
  /** sha256 of the file's bytes, hex. */
  readonly digest: string;
  readonly documents: readonly ManifestDocument[];
}

const invalid = (message: string, cause?: unknown) =>
  new K3sVmError('WORKLOAD_INVALID', message, { cause, hint: 'fix the manifest; nothing from it was applied' });

/** Whether a symbolic link in a manifest directory leads to a file (a directory is skipped, as a directory is); a dangling one is an error naming it. */
async function linkedFile(link: string): Promise<boolean> {
  try {
    return (await stat(link)).isFile();
  } catch (error) {
    const target = await readlink(link).catch(() => '?');
    throw new K3sVmError(
      'WORKLOAD_INVALID',
      `manifest ${link} is a symbolic link to ${target}, which ${(error as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : `cannot be read: ${(error as Error).message}`}`,
      { cause: error, hint: 'fix or remove the link; nothing was applied' },
    );
  }
}

/**
 * Files first-to-last: each file as it is, each directory's manifest files sorted by name (not
 * recursive). from names where the paths came from for the remedy of one that cannot be read: the
 * setting as the user gave it (`--manifests`, `K3S_VM_MANIFESTS`, `option manifests`), or the path itself.
 */
export async function expandManifestPaths(paths: readonly string[], from = 'the path'): Promise<string[]> {
  const out: string[] = [];
  for (const path of paths) {
    const info = await stat(path).catch((error: NodeJS.ErrnoException) => {
      throw new K3sVmError(
        'WORKLOAD_INVALID',
        `manifest ${path} ${error.code === 'ENOENT' ? 'does not exist' : `cannot be read: ${error.message}`}`,
        {
          cause: error,
          hint: `check ${from}; relative paths are relative to the project root`,
        },
      );
    });
    if (info.isDirectory()) {
      const names: string[] = [];
      for (const entry of await readdir(path, { withFileTypes: true })) {
        if (!manifestExtensions.test(entry.name)) continue;
        if (entry.isFile()) names.push(entry.name);
        // Followed, as kubectl does: a directory made by Nix (linkFarm, symlinkJoin) holds only links.
        else if (entry.isSymbolicLink() && (await linkedFile(join(path, entry.name)))) names.push(entry.name);
      }
      out.push(...names.sort().map((name) => join(path, name)));
    } else out.push(path);
  }
  return out;
}

/**
 * How many nodes aliases may stand for in one document (the yaml package's count): a
 * manifest uses a few anchors; a "billion laughs" alias bomb, which expands to gigabytes
 * once sent, needs many more. Refused while parsing, before anything is touched.
 */
export const maxAliasCount = 100;

/** Reads and parses a manifest file whole; a YAML error or an object without kind or name is an error naming the document. */
export async function readManifestFile(path: string): Promise<ManifestFile> {
  let content: Buffer;
  try {
    content = await readFile(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new K3sVmError(
      'WORKLOAD_INVALID',
      `manifest ${path} ${code === 'ENOENT' ? 'does not exist' : `cannot be read: ${(error as Error).message}`}`,
      { cause: error },
    );
  }
  const lines = new LineCounter();
  // YAML 1.2 with merge keys (<<), as Kubernetes' reader takes them; duplicate keys are an error.
  const parsed = parseAllDocuments(content.toString('utf8'), { lineCounter: lines, merge: true, prettyErrors: true });
  // A stream without documents comes back as an empty list that carries its errors.
  const streamErrors = 'empty' in parsed ? parsed.errors : [];
  const parts = [...parsed];
  const lineOf = (offset: number) => lines.linePos(offset).line || 1;
  const firstLine = (error: Error) => error.message.split('\n')[0]!;
  const documents: ManifestDocument[] = [];
  let index = 0;
  for (const error of streamErrors) {
    throw invalid(`manifest ${path} (line ${lineOf(error.pos[0])}): not valid YAML: ${firstLine(error)}`, error);
  }
  for (const document of parts) {
    // Only comments and blank lines (a trailing `---` is common), or an explicit null: no document, as for kubectl.
    if (document.errors.length === 0 && (document.contents === null || (isScalar(document.contents) && document.contents.value === null)))
      continue;
    index++;
    const line = lineOf(document.contents?.range[0] ?? document.range[0]);
    const where = (at: number) => `manifest ${path}, document ${index} (line ${at})`;
    const error = document.errors[0];
    if (error) throw invalid(`${where(lineOf(error.pos[0]))}: not valid YAML: ${firstLine(error)}`, error);
    let value: unknown;
    try {
      value = document.toJS({ maxAliasCount });
    } catch (error) {
      if (/Excessive alias count/.test((error as Error).message)) {
        throw invalid(
          `${where(line)}: its aliases (*name) expand to more than ${maxAliasCount} nodes, which is refused as a resource exhaustion attack (an alias bomb)`,
          error,
        );
      }
      throw invalid(`${where(line)}: not valid YAML: ${firstLine(error as Error)}`, error);
    }
    const objects = isList(value) ? (value as { items: unknown[] }).items : [value];
    for (const object of objects) {
      const problem = objectProblem(object);
      if (problem) throw invalid(`${where(line)}: ${problem}`);
      documents.push({ index, line, object: object as KubernetesObject });
    }
  }
  return { path, bytes: content.length, digest: createHash('sha256').update(content).digest('hex'), documents };
}

function isList(value: unknown): boolean {
  const object = value as { kind?: unknown; items?: unknown } | null;
  return typeof object?.kind === 'string' && object.kind.endsWith('List') && Array.isArray(object.items);
}

function objectProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    return 'not a Kubernetes object (a mapping with apiVersion, kind and metadata.name)';
  const object = value as KubernetesObject;
  if (!object.apiVersion) return 'it has no apiVersion';
  if (!object.kind) return 'it has no kind';
  if (!object.metadata?.name) return `the ${object.kind} has no metadata.name (server-side apply needs one)`;
  return undefined;
}

/** `Deployment default/app`, `CustomResourceDefinition widgets.example.com`. */
export function describeObject(object: KubernetesObject): string {
  const namespace = object.metadata?.namespace;
  return `${object.kind} ${namespace ? `${namespace}/` : ''}${object.metadata?.name}`;
}

const isCrd = (object: KubernetesObject) =>
  object.kind === 'CustomResourceDefinition' && object.apiVersion?.startsWith('apiextensions.k8s.io/');
const isDeployment = (object: KubernetesObject) => object.kind === 'Deployment' && object.apiVersion === 'apps/v1';

export interface ApplyOptions {
  /** Wait until the Deployments of the file have rolled out. @default false */
  readonly waitForRollout?: boolean;
  /** When waiting for CRDs and rollouts gives up (ms since the epoch). */
  readonly deadline: number;
  readonly signal?: AbortSignal | undefined;
}

export interface AppliedFile {
  /** The objects applied, in order (CRDs first). */
  readonly objects: readonly string[];
  readonly durationMs: number;
}

/** An object as the API server returns it, read loosely: only a few status fields are looked at. */
interface ObjectState {
  readonly metadata?: { readonly generation?: number };
  readonly spec?: { readonly replicas?: number };
  readonly status?: {
    readonly conditions?: ReadonlyArray<{
      readonly type?: string;
      readonly status?: string;
      readonly reason?: string;
      readonly message?: string;
    }>;
    readonly observedGeneration?: number;
    readonly replicas?: number;
    readonly updatedReplicas?: number;
    readonly availableReplicas?: number;
  };
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Reads an object until `done` says it is (returns a problem text to fail at once), or the deadline. */
async function waitFor(
  api: KubernetesObjectApi,
  object: KubernetesObject,
  what: string,
  done: (current: ObjectState) => boolean | string,
  options: ApplyOptions,
): Promise<void> {
  const spec = {
    apiVersion: object.apiVersion!,
    kind: object.kind!,
    metadata: { name: object.metadata!.name!, namespace: object.metadata?.namespace ?? '' },
  };
  let last: string;
  for (;;) {
    throwIfAborted(options.signal);
    try {
      const current = (await api.read(spec)) as ObjectState;
      const verdict = done(current);
      if (verdict === true) return;
      if (typeof verdict === 'string') throw new K3sVmError('APPLY_FAILED', `${describeObject(object)} ${verdict}`);
      last = JSON.stringify(current.status?.conditions ?? current.status ?? {});
    } catch (error) {
      if (error instanceof K3sVmError) throw error;
      last = apiErrorText(error);
    }
    if (Date.now() >= options.deadline) {
      throw new K3sVmError('APPLY_FAILED', `${describeObject(object)} did not become ${what} in time; last status: ${last.slice(0, 300)}`, {
        hint: 'look at the object with k3s-vm kubectl describe; the cluster is usable',
      });
    }
    await sleep(100);
  }
}

function crdEstablished(current: ObjectState): boolean | string {
  const conditions = current.status?.conditions ?? [];
  const names = conditions.find((c) => c.type === 'NamesAccepted');
  if (names?.status === 'False') return `was not accepted: ${names.reason ?? ''} ${names.message ?? ''}`.trim();
  return conditions.some((c) => c.type === 'Established' && c.status === 'True');
}

/** kubectl rollout status's rule for a Deployment. */
function deploymentRolledOut(current: ObjectState): boolean | string {
  const status = current.status ?? {};
  const progressing = (status.conditions ?? []).find((c) => c.type === 'Progressing');
  if (progressing?.reason === 'ProgressDeadlineExceeded') return `exceeded its progress deadline: ${progressing.message ?? ''}`.trim();
  const replicas = current.spec?.replicas ?? 1;
  return (
    (status.observedGeneration ?? 0) >= (current.metadata?.generation ?? 0) &&
    (status.updatedReplicas ?? 0) >= replicas &&
    (status.replicas ?? 0) <= (status.updatedReplicas ?? 0) &&
    (status.availableReplicas ?? 0) >= (status.updatedReplicas ?? 0)
  );
}

/** One client per KubeConfig: it caches the API's discovery, which every file would otherwise ask for again. */
const objectApis = new WeakMap<KubeConfig, KubernetesObjectApi>();

function objectApiOf(kubeConfig: KubeConfig): KubernetesObjectApi {
  let api = objectApis.get(kubeConfig);
  if (!api) {
    api = clientNode().KubernetesObjectApi.makeApiClient(kubeConfig);
    objectApis.set(kubeConfig, api);
  }
  return api;
}

/** What a 404 was about: the API server's Status names the kind of what it did not find (`namespaces`). */
function notFoundKind(error: unknown): string | undefined {
  const body = (error as { body?: unknown }).body;
  let status: unknown = body;
  if (typeof body === 'string') {
    try {
      status = JSON.parse(body);
    } catch {
      return undefined;
    }
  }
  const kind = (status as { details?: { kind?: unknown } } | null)?.details?.kind;
  return typeof kind === 'string' ? kind : undefined;
}

/** Why an apply was refused, for the error's hint. */
function refusalHint(code: number | undefined, error: unknown, object: KubernetesObject): string {
  if (code === 409)
    return `another field manager owns those fields; change them through their owner, or drop them from the manifest (k3s-vm applies as field manager "${fieldManager}" without force)`;
  if (code === 422 || code === 400) return 'the API server rejected the object as invalid: fix the manifest';
  if (code === 404 && notFoundKind(error) === 'namespaces')
    return `namespace ${object.metadata?.namespace ?? ''} does not exist: apply its Namespace before it (in an earlier file, or earlier in this one), or fix metadata.namespace`;
  // client-node's own error when the group is served but the kind is not in it.
  if (code === 404 || /Unrecognized API version and kind/.test((error as Error | undefined)?.message ?? ''))
    return 'the API server does not serve this kind: is its CRD applied before it (in an earlier file, or in this one)?';
  return 'the cluster is usable; fix the cause and apply again';
}

/**
 * Server-side applies a file's objects as field manager k3s-vm: its CRDs first (each waited
 * for until Established), then the other objects in order, then (optionally) waits for its
 * Deployments to roll out. A refusal stops at that object and says what was applied before it.
 */
export async function applyManifestFile(kubeConfig: KubeConfig, file: ManifestFile, options: ApplyOptions): Promise<AppliedFile> {
  const started = Date.now();
  const k8s = clientNode();
  const api = objectApiOf(kubeConfig);
  const ordered = [...file.documents.filter((d) => isCrd(d.object)), ...file.documents.filter((d) => !isCrd(d.object))];
  const applied: string[] = [];
  const crds = ordered.filter((d) => isCrd(d.object));
  for (const document of ordered) {
    throwIfAborted(options.signal);
    // CRDs before the first object that is not one: their kinds must be served by then.
    if (!isCrd(document.object) && crds.length > 0 && applied.length === crds.length) {
      for (const crd of crds) await waitFor(api, crd.object, 'Established', crdEstablished, options);
    }
    const name = describeObject(document.object);
    try {
      await api.patch(structuredClone(document.object), undefined, undefined, fieldManager, false, k8s.PatchStrategy.ServerSideApply);
    } catch (error) {
      const code = typeof (error as { code?: unknown }).code === 'number' ? (error as { code: number }).code : undefined;
      const before =
        applied.length === 0
          ? `nothing from ${file.path} was applied before it`
          : `applied from ${file.path} before it: ${applied.join(', ')}`;
      throw new K3sVmError(
        'APPLY_FAILED',
        `manifest ${file.path}, document ${document.index} (line ${document.line}): applying ${name} failed: ${apiErrorText(error)}`,
        {
          cause: error,
          details: before,
          hint: refusalHint(code, error, document.object),
        },
      );
    }
    applied.push(name);
  }
  if (crds.length > 0 && applied.length === crds.length) {
    for (const crd of crds) await waitFor(api, crd.object, 'Established', crdEstablished, options);
  }
  if (options.waitForRollout) {
    for (const document of ordered.filter((d) => isDeployment(d.object))) {
      await waitFor(api, document.object, 'rolled out', deploymentRolledOut, options);
    }
  }
  return { objects: applied, durationMs: Date.now() - started };
}
