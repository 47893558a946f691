// "node Ready" after a restore, against a small HTTP stand-in for the API server: the node's
// Ready condition or its Lease must show a heartbeat newer than the restore.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { k3sReadinessSteps, nodeReady } from '../../src/readiness/steps.js';
import { checkStep } from '../support/readiness-step.js';

const restoredAt = Date.parse('2026-11-26T03:00:00Z');
const before = '2026-11-26T02:50:00Z';
const after = '2026-11-26T03:00:05Z';

let ready = 'True';
let heartbeat = before;
let renewTime: string | undefined = before;
let server: Server;
let kubeConfig: KubeConfig;

beforeAll(async () => {
  server = createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    const node = {
      kind: 'Node',
      apiVersion: 'v1',
      metadata: { name: 'n1' },
      status: {
        conditions: [{ type: 'Ready', status: ready, reason: 'KubeletReady', lastHeartbeatTime: heartbeat, lastTransitionTime: before }],
      },
    };
    if (req.url?.startsWith('/api/v1/nodes/n1')) {
      res.end(JSON.stringify(node));
    } else if (req.url?.startsWith('/api/v1/nodes?') && !req.url.includes('watch=')) {
      // The list a boot's step reads (its watch after it gets the 404 below).
      res.end(JSON.stringify({ kind: 'NodeList', apiVersion: 'v1', metadata: { resourceVersion: '1' }, items: [node] }));
    } else if (req.url?.startsWith('/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1') && renewTime) {
      res.end(
        JSON.stringify({
          kind: 'Lease',
          apiVersion: 'coordination.k8s.io/v1',
          metadata: { name: 'n1', namespace: 'kube-node-lease' },
          spec: { holderIdentity: 'n1', renewTime },
        }),
      );
    } else {
      res.statusCode = 404;
      res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'NotFound', code: 404, message: 'not found' }));
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  kubeConfig = new KubeConfig();
  kubeConfig.loadFromOptions({
    clusters: [{ name: 'c', server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, skipTLSVerify: true }],
    users: [{ name: 'u' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  });
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

/** The step through client-node: the stand-in's user has no certificate or token, which the steps' own connection needs. */
function check(): Promise<void> {
  return checkStep(nodeReady, { kubeConfig, nodeName: 'n1', restoredAt });
}

describe('node Ready after a restore', () => {
  it('passes on a Ready condition reported after the restore', async () => {
    [ready, heartbeat, renewTime] = ['True', after, before];
    await expect(check()).resolves.toBeUndefined();
  });

  it('passes on a stale condition when the Lease was renewed after the restore (the kubelet reports status only every 5 min)', async () => {
    [ready, heartbeat, renewTime] = ['True', before, after];
    await expect(check()).resolves.toBeUndefined();
  });

  it('waits while both are from before the restore, saying when each was', async () => {
    [ready, heartbeat, renewTime] = ['True', before, before];
    await expect(check()).rejects.toThrow(
      /Ready as last reported 2026-11-26T02:50:00.000Z, its lease last renewed 2026-11-26T02:50:00.000Z, both before the restore/,
    );
  });

  it('waits when there is no Lease and the condition is stale, naming the Lease problem', async () => {
    [ready, heartbeat, renewTime] = ['True', before, undefined];
    await expect(check()).rejects.toThrow(/its lease could not be read: .*404/);
  });

  it('waits while the node is not Ready, however fresh its Lease', async () => {
    [ready, heartbeat, renewTime] = ['False', after, after];
    await expect(check()).rejects.toThrow(/node n1 is not Ready/);
  });

  it("is the K3s list's own node step, told of the restore by the context: at a boot the Lease does not count", async () => {
    expect(k3sReadinessSteps).toContain(nodeReady);
    [ready, heartbeat, renewTime] = ['True', before, after];
    // The same step without restoredAt is a boot's: a stale Ready condition is not Ready from this boot.
    const atBoot = checkStep(nodeReady, { kubeConfig, nodeName: 'n1', bootStartedAt: restoredAt, restoredAt: undefined });
    await expect(atBoot).rejects.toThrow(/before this boot/);
    await expect(check()).resolves.toBeUndefined();
  });
});
