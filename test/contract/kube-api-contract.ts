// The contract between k3s-vm and the Kubernetes API server: what k3s-vm relies on, as tests
// that run against the real API server (test/real/contract.test.ts) and against the fake K3s
// API test double (test/fixtures/fake-k3s-api/contract.test.ts), so the fake cannot drift from
// what it stands in for. A difference found here is fixed in the fake or written beside its code.
import { request } from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { expect, it } from 'vitest';
import { nodeReady } from '../../src/readiness/steps.js';
import { checkStep } from '../support/readiness-step.js';

// Raw API bodies, read field by field as the server sent them.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = Record<string, any>;

interface Reply {
  readonly status: number;
  readonly body: Json;
  readonly text: string;
}

/** Raw HTTPS calls and watches to the cluster of a KubeConfig, with its credentials. */
export function rawClient(kc: KubeConfig) {
  const server = new URL(kc.getCurrentCluster()!.server);
  async function options(path: string, method: string, headers: Record<string, string | number> = {}) {
    const opts: Json = { host: server.hostname, port: Number(server.port || 443), path, method, headers };
    await kc.applyToHTTPSOptions(opts);
    if (server.hostname === '127.0.0.1') opts['servername'] ??= 'localhost';
    return opts;
  }
  const call = async (method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<Reply> => {
    const text = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    const opts = await options(
      path,
      method,
      text === undefined ? {} : { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(text) },
    );
    return new Promise((resolve, reject) => {
      const req = request(opts, (res) => {
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (data += chunk));
        res.on('end', () => {
          let parsed: Json = {};
          try {
            parsed = JSON.parse(data);
          } catch {
            // not JSON: /readyz answers text
          }
          resolve({ status: res.statusCode ?? 0, body: parsed, text: data });
        });
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(text);
    });
  };
  /** The first `count` events of a watch at `path`. */
  const watch = async (path: string, count: number, timeoutMs = 30_000): Promise<Json[]> => {
    const opts = await options(path, 'GET');
    return new Promise((resolve, reject) => {
      const events: Json[] = [];
      const timer = setTimeout(() => {
        req.destroy();
        reject(new Error(`the watch ${path} gave ${events.length} of ${count} events in ${timeoutMs} ms`));
      }, timeoutMs);
      const req = request(opts, (res) => {
        let buffer = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buffer += chunk;
          for (let i = buffer.indexOf('\n'); i >= 0 && events.length < count; i = buffer.indexOf('\n')) {
            events.push(JSON.parse(buffer.slice(0, i)));
            buffer = buffer.slice(i + 1);
          }
          if (events.length >= count) {
            clearTimeout(timer);
            req.destroy();
            resolve(events);
          }
        });
        res.on('end', () => {
          clearTimeout(timer);
          if (events.length < count) reject(new Error(`the watch ${path} ended after ${events.length} of ${count} events`));
        });
      });
      req.on('error', (error) => {
        clearTimeout(timer);
        if (events.length < count) reject(error);
      });
      req.end();
    });
  };
  return { call, watch };
}

async function eventually<T>(check: () => Promise<T | undefined | false>, what: string, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what} after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const APPLY = 'application/apply-patch+yaml';

/** A Status object as the API server sends it for a failed request. */
function expectStatus(reply: Reply, code: number, reason: string, message: RegExp) {
  expect(reply.status).toBe(code);
  expect(reply.body).toMatchObject({ kind: 'Status', apiVersion: 'v1', status: 'Failure', code, reason });
  expect(reply.body['message']).toMatch(message);
}

/**
 * Declares the contract's tests. `target` gives the KubeConfig of the API server under test;
 * `waitMs` is how long an asynchronous controller (namespace finalizer, ServiceAccount, CRD
 * naming) may take there.
 */
export function kubeApiContract(target: () => KubeConfig, waitMs: number): void {
  const unique = () => `contract-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;
  const client = () => rawClient(target());

  it('answers /readyz with 200 and "ok"', async () => {
    const reply = await client().call('GET', '/readyz');
    expect(reply.status).toBe(200);
    expect(reply.text.trim()).toBe('ok');
  });

  it('serves discovery: the core version, and the groups k3s-vm reads', async () => {
    const core = await client().call('GET', '/api');
    expect(core.body).toMatchObject({ kind: 'APIVersions', versions: ['v1'] });
    const groups = await client().call('GET', '/apis');
    expect(groups.body['kind']).toBe('APIGroupList');
    const names = (groups.body['groups'] as Json[]).map((g) => g['name']);
    expect(names).toEqual(expect.arrayContaining(['apps', 'apiextensions.k8s.io', 'apiregistration.k8s.io', 'coordination.k8s.io']));
    const resources = await client().call('GET', '/api/v1');
    expect(resources.body['kind']).toBe('APIResourceList');
    const namespaces = (resources.body['resources'] as Json[]).find((r) => r['name'] === 'namespaces');
    expect(namespaces).toMatchObject({ namespaced: false, kind: 'Namespace' });
  });

  it("renews the node's Lease in kube-node-lease, the heartbeat a restore's node Ready step believes", async () => {
    const { call } = client();
    const nodes = await call('GET', '/api/v1/nodes');
    const name = (nodes.body['items'] as Json[])[0]!['metadata']['name'] as string;
    const path = `/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/${name}`;
    const read = async () => {
      const reply = await call('GET', path);
      return reply.status === 200 ? reply.body : undefined;
    };
    const first = await eventually(read, `the Lease of node ${name}`, waitMs);
    expect(first).toMatchObject({ kind: 'Lease', apiVersion: 'coordination.k8s.io/v1', spec: { holderIdentity: name } });
    expect(first['metadata']['ownerReferences']).toEqual([expect.objectContaining({ apiVersion: 'v1', kind: 'Node', name })]);
    expect(first['spec']['renewTime']).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    // A valid lease, renewed within its duration (every 10 s on K3s; the fake's own tests watch
    // it renew), on the clock a restore sets; the step of a restore believes it.
    const renewedAt = Date.parse(first['spec']['renewTime']);
    const durationMs = Number(first['spec']['leaseDurationSeconds']) * 1000;
    expect(durationMs).toBeGreaterThan(0);
    expect(Math.abs(Date.now() - renewedAt), `renewTime ${first['spec']['renewTime']}`).toBeLessThan(durationMs);
    await expect(checkStep(nodeReady, { kubeConfig: target(), nodeName: name, restoredAt: renewedAt })).resolves.toBeUndefined();
  });

  it('creates a namespace Active, gives it a default ServiceAccount soon after, and deletes it through Terminating to 404', async () => {
    const { call } = client();
    const name = unique();
    const created = await call('POST', '/api/v1/namespaces', { metadata: { name } });
    expect(created.status).toBe(201);
    expect(created.body['status']).toEqual({ phase: 'Active' });
    expect(created.body['spec']).toEqual({ finalizers: ['kubernetes'] });
    // The race k3s-vm's namespace fixture waits out: 404 until the controller has made it.
    const account = await eventually(
      async () => {
        const reply = await call('GET', `/api/v1/namespaces/${name}/serviceaccounts/default`);
        if (reply.status === 404) expectStatus(reply, 404, 'NotFound', /^serviceaccounts "default" not found$/);
        return reply.status === 200 ? reply.body : undefined;
      },
      'the default ServiceAccount',
      waitMs,
    );
    expect(account['metadata']['namespace']).toBe(name);
    const deleted = await call('DELETE', `/api/v1/namespaces/${name}`);
    expect(deleted.status).toBe(200);
    expect(deleted.body['status']['phase']).toBe('Terminating');
    expect(deleted.body['metadata']['deletionTimestamp']).toEqual(expect.any(String));
    const gone = await eventually(
      async () => {
        const reply = await call('GET', `/api/v1/namespaces/${name}`);
        return reply.status === 404 ? reply : undefined;
      },
      'the namespace to be finalized',
      waitMs,
    );
    expectStatus(gone, 404, 'NotFound', new RegExp(`^namespaces "${name}" not found$`));
    expect(gone.body['details']).toMatchObject({ name, kind: 'namespaces' });
  });

  it('answers 404, 409 and 422 with Status bodies of the documented reasons', async () => {
    const { call } = client();
    const name = unique();
    expectStatus(
      await call('GET', `/api/v1/namespaces/default/configmaps/${name}`),
      404,
      'NotFound',
      new RegExp(`^configmaps "${name}" not found$`),
    );
    const body = { metadata: { name }, data: { a: 'b' } };
    expect((await call('POST', '/api/v1/namespaces/default/configmaps', body)).status).toBe(201);
    const again = await call('POST', '/api/v1/namespaces/default/configmaps', body);
    expectStatus(again, 409, 'AlreadyExists', new RegExp(`^configmaps "${name}" already exists$`));
    expect(again.body['details']).toMatchObject({ name, kind: 'configmaps' });
    const invalid = await call('POST', '/api/v1/namespaces/default/pods', { metadata: { name }, spec: { containers: [] } });
    expectStatus(invalid, 422, 'Invalid', new RegExp(`^Pod "${name}" is invalid: spec\\.containers: Required value`));
    expect(invalid.body['details']).toMatchObject({ name, kind: 'Pod' });
    expect(invalid.body['details']['causes']).toEqual(
      expect.arrayContaining([expect.objectContaining({ reason: 'FieldValueRequired', field: 'spec.containers' })]),
    );
    await call('DELETE', `/api/v1/namespaces/default/configmaps/${name}`);
  });

  it('server-side applies with managedFields, and answers 409 Conflict to another manager without force', async () => {
    const { call } = client();
    const name = unique();
    const path = `/api/v1/namespaces/default/configmaps/${name}`;
    const manifest = JSON.stringify({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name }, data: { key: 'ours' } });
    const applied = await call('PATCH', `${path}?fieldManager=k3s-vm`, manifest, APPLY);
    expect(applied.status).toBe(201);
    expect(applied.body['data']).toEqual({ key: 'ours' });
    const managed = (applied.body['metadata']['managedFields'] as Json[]).map((f) => [f['manager'], f['operation'], f['fieldsType']]);
    expect(managed).toEqual([['k3s-vm', 'Apply', 'FieldsV1']]);
    const reapplied = await call('PATCH', `${path}?fieldManager=k3s-vm`, manifest, APPLY);
    expect(reapplied.status).toBe(200);
    const theirs = JSON.stringify({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name }, data: { key: 'theirs' } });
    const conflict = await call('PATCH', `${path}?fieldManager=someone-else`, theirs, APPLY);
    expectStatus(conflict, 409, 'Conflict', /^Apply failed with 1 conflict: conflict with "k3s-vm": \.data\.key$/);
    const forced = await call('PATCH', `${path}?fieldManager=someone-else&force=true`, theirs, APPLY);
    expect(forced.status).toBe(200);
    expect(forced.body['data']).toEqual({ key: 'theirs' });
    await call('DELETE', path);
  });

  it('makes a new CRD Established and serves its kind, and answers a watch from before it with 410 Expired', async () => {
    const { call, watch } = client();
    const group = `${unique()}.k3s-vm.test`;
    const name = `gadgets.${group}`;
    const crd = {
      apiVersion: 'apiextensions.k8s.io/v1',
      kind: 'CustomResourceDefinition',
      metadata: { name },
      spec: {
        group,
        scope: 'Namespaced',
        names: { plural: 'gadgets', singular: 'gadget', kind: 'Gadget' },
        versions: [
          {
            name: 'v1',
            served: true,
            storage: true,
            schema: { openAPIV3Schema: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } },
          },
        ],
      },
    };
    expect((await call('POST', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', crd)).status).toBe(201);
    const established = await eventually(
      async () => {
        const reply = await call('GET', `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${name}`);
        const conditions = (reply.body['status']?.['conditions'] ?? []) as Json[];
        return conditions.find((c) => c['type'] === 'Established' && c['status'] === 'True') ? conditions : undefined;
      },
      'the CRD to be Established',
      waitMs,
    );
    expect(established.find((c) => c['type'] === 'NamesAccepted')?.['status']).toBe('True');
    const served = await eventually(
      async () => {
        const reply = await call('POST', `/apis/${group}/v1/namespaces/default/gadgets`, {
          apiVersion: `${group}/v1`,
          kind: 'Gadget',
          metadata: { name: 'one' },
        });
        return reply.status === 201 ? reply : undefined;
      },
      'the custom resource to be served',
      waitMs,
    );
    expect(served.body['kind']).toBe('Gadget');
    // A watch from a resourceVersion older than what the server keeps is answered with 410.
    // The real API server keeps a kind's history from when it began serving it, so a version
    // from before this CRD existed is reliably too old (a built-in kind's history can reach back
    // to the cluster's first write on a new cluster).
    const [expired] = await watch(`/apis/${group}/v1/namespaces/default/gadgets?watch=1&resourceVersion=1`, 1);
    expect(expired).toMatchObject({ type: 'ERROR', object: { kind: 'Status', status: 'Failure', code: 410, reason: 'Expired' } });
    expect(expired!['object']['message']).toMatch(/^too old resource version: 1 \(\d+\)$/);
    await call('DELETE', `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${name}`);
  });

  it('watches from a list resourceVersion', async () => {
    const { call, watch } = client();
    const name = unique();
    const list = await call('GET', '/api/v1/namespaces/default/configmaps');
    const from = list.body['metadata']['resourceVersion'] as string;
    expect(from).toMatch(/^\d+$/);
    const events = watch(`/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=${from}&fieldSelector=metadata.name%3D${name}`, 1);
    await call('POST', '/api/v1/namespaces/default/configmaps', { metadata: { name } });
    const [added] = await events;
    expect(added).toMatchObject({ type: 'ADDED', object: { kind: 'ConfigMap', metadata: { name } } });
    expect(Number(added!['object']['metadata']['resourceVersion'])).toBeGreaterThan(Number(from));
    await call('DELETE', `/api/v1/namespaces/default/configmaps/${name}`);
  });
}
