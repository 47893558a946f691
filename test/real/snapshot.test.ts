// A snapshot of the real-Kubernetes guest, saved by this run's setup once the cluster was
// ready: after a stop, the next start restores it instead of booting, and "node Ready" is
// judged against the real kubelet (its status and its Lease in kube-node-lease) after the
// restore; and a rewind of the running guest to a named snapshot. This file rewinds and stops
// the shared guest: vitest.real.config.ts runs it alone, after the rest.
import { AppsV1Api, CoordinationV1Api, CoreV1Api, type V1Deployment } from '@kubernetes/client-node';
import { expect, it } from 'vitest';
import {
  deleteNamedSnapshot,
  loadKubeConfig,
  rewindCluster,
  saveNamedSnapshot,
  startCluster,
  stopCluster,
} from '../../src/cluster/index.js';
import { describeReal, realGuest } from '../support/real-cluster.js';
import { recordingLogger } from '../support/test-guest.js';

describeReal('a snapshot of the real-Kubernetes guest', () => {
  it('was saved once the cluster was ready, or restored when an earlier run saved it', () => {
    const log = realGuest()!.bootLog;
    const saved = log.some((l) => /^saved the ready VM \(.* of VM state, in [\d.]+ s\); later starts restore it$/.test(l));
    const restored = log.some((l) => /^cluster ready in [\d.]+ s \(restored from the snapshot\)/.test(l));
    expect([saved, restored]).toContain(true);
    expect(saved && restored).toBe(false);
  });

  it('rewinds the running guest to a named snapshot: a Deployment made after it is gone, its own still runs, and a new pod starts', async () => {
    const guest = realGuest()!;
    const kc = loadKubeConfig(guest.provided.kubeconfig);
    const apps = kc.makeApiClient(AppsV1Api);
    const core = kc.makeApiClient(CoreV1Api);
    const suffix = Date.now().toString(36);
    const deployment = (name: string): V1Deployment => ({
      metadata: { name, namespace: 'default' },
      spec: {
        replicas: 1,
        selector: { matchLabels: { app: name } },
        template: {
          metadata: { labels: { app: name } },
          spec: {
            terminationGracePeriodSeconds: 0,
            containers: [{ name: 'main', image: 'k3s-vm.test/pause:1', imagePullPolicy: 'Never' }],
          },
        },
      },
    });
    const available = async (name: string) =>
      (await apps.readNamespacedDeployment({ name, namespace: 'default' })).status?.availableReplicas ?? 0;
    const kept = `kept-${suffix}`;
    await apps.createNamespacedDeployment({ namespace: 'default', body: deployment(kept) });
    await expect.poll(() => available(kept), { timeout: 120_000, interval: 500 }).toBe(1);
    await saveNamedSnapshot(`with-${kept}`, guest.options);
    try {
      const after = `after-${suffix}`;
      await apps.createNamespacedDeployment({ namespace: 'default', body: deployment(after) });
      await expect.poll(() => available(after), { timeout: 120_000, interval: 500 }).toBe(1);

      // The run's own lease (held by its global setup) is the only one: the rewind is allowed.
      const result = await rewindCluster({ ...guest.options, to: `with-${kept}`, ownLeases: [guest.provided.leaseId!] });
      expect(result.steps.map((step) => step.name)).toContain('node Ready');
      const names = (await apps.listNamespacedDeployment({ namespace: 'default' })).items.map((d) => d.metadata?.name);
      expect(names).toContain(kept);
      expect(names).not.toContain(after);
      expect(await available(kept)).toBe(1);
      const pods = (await core.listNamespacedPod({ namespace: 'default', labelSelector: `app=${kept}` })).items;
      expect(pods.map((pod) => pod.status?.phase)).toEqual(['Running']);
      // The kubelet runs new pods after the rewind.
      const pod = `new-after-rewind-${suffix}`;
      await core.createNamespacedPod({
        namespace: 'default',
        body: {
          metadata: { name: pod },
          spec: {
            restartPolicy: 'Never',
            terminationGracePeriodSeconds: 0,
            containers: [{ name: 'main', image: 'k3s-vm.test/pause:1', imagePullPolicy: 'Never' }],
          },
        },
      });
      await expect
        .poll(async () => (await core.readNamespacedPod({ name: pod, namespace: 'default' })).status?.phase, {
          timeout: 120_000,
          interval: 500,
        })
        .toBe('Running');
      await core.deleteNamespacedPod({ name: pod, namespace: 'default', gracePeriodSeconds: 0 });
    } finally {
      await deleteNamedSnapshot(`with-${kept}`, guest.options);
      await apps.deleteNamespacedDeployment({ name: kept, namespace: 'default' }).catch(() => undefined);
    }
  });

  it('restores after a stop, with the node Ready by the real kubelet after the restore and a pod that still runs', async () => {
    const guest = realGuest()!;
    const before = loadKubeConfig(guest.provided.kubeconfig);
    const marker = `before-restore-${Date.now().toString(36)}`;
    // Made after the snapshot: gone after the restore, which returns to the saved state.
    await before.makeApiClient(CoreV1Api).createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name: marker } } });

    await stopCluster({ dir: guest.options.dir, env: {} });
    const logger = recordingLogger();
    const restoredAt = Date.now();
    const cluster = await startCluster({ ...guest.options, logger });
    try {
      expect(logger.lines).toContainEqual(expect.stringMatching(/^restoring the saved real-guest/));
      expect(logger.lines).toContainEqual(expect.stringMatching(/^cluster ready in [\d.]+ s \(restored from the snapshot\)/));
      expect(logger.lines.filter((l) => /^booting /.test(l))).toEqual([]);
      const kc = loadKubeConfig(cluster.kubeconfig);
      const core = kc.makeApiClient(CoreV1Api);
      const node = await core.readNode({ name: 'real-guest' });
      expect(node.status?.conditions?.find((c) => c.type === 'Ready')?.status).toBe('True');
      // The heartbeat that proved the kubelet alive: renewed by the real kubelet after the restore.
      const lease = await kc.makeApiClient(CoordinationV1Api).readNamespacedLease({ name: 'real-guest', namespace: 'kube-node-lease' });
      const renewed = Date.parse(String(lease.spec?.renewTime));
      const heartbeat = Date.parse(String(node.status?.conditions?.find((c) => c.type === 'Ready')?.lastHeartbeatTime));
      expect(Math.max(renewed, heartbeat)).toBeGreaterThan(restoredAt - 2000);
      const configMaps = (await core.listNamespacedConfigMap({ namespace: 'default' })).items.map((c) => c.metadata?.name);
      expect(configMaps).not.toContain(marker);
      // The kubelet still runs pods after the restore.
      const name = `after-restore-${Date.now().toString(36)}`;
      await core.createNamespacedPod({
        namespace: 'default',
        body: {
          metadata: { name },
          spec: {
            restartPolicy: 'Never',
            terminationGracePeriodSeconds: 0,
            containers: [{ name: 'main', image: 'k3s-vm.test/pause:1', imagePullPolicy: 'Never' }],
          },
        },
      });
      await expect
        .poll(async () => (await core.readNamespacedPod({ name, namespace: 'default' })).status?.phase, { timeout: 120_000, interval: 500 })
        .toBe('Running');
      await core.deleteNamespacedPod({ name, namespace: 'default', gracePeriodSeconds: 0 });
    } finally {
      await cluster.stop();
    }
  });
});
