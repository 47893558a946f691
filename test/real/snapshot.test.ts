// A snapshot of the real-Kubernetes guest, saved by this run's setup once the cluster was
// ready: after a stop, the next start restores it instead of booting, and "node Ready" is
// judged against the real kubelet (its status and its Lease in kube-node-lease) after the
// restore. This file stops the shared guest: test/real/sequencer.ts runs it last.
import { CoordinationV1Api, CoreV1Api } from '@kubernetes/client-node';
import { expect, it } from 'vitest';
import { loadKubeConfig, startCluster, stopCluster } from '../../src/cluster/index.js';
import { describeReal, realGuest } from '../helpers/real-cluster.js';
import { recordingLogger } from '../helpers/test-guest.js';

describeReal('a snapshot of the real-Kubernetes guest', () => {
  it('was saved once the cluster was ready, or restored when an earlier run saved it', () => {
    const log = realGuest()!.bootLog;
    const saved = log.some((l) => /^saved the ready VM \(.* of VM state, in [\d.]+ s\); later starts restore it$/.test(l));
    const restored = log.some((l) => /^cluster ready in [\d.]+ s \(restored from the snapshot\)/.test(l));
    expect([saved, restored]).toContain(true);
    expect(saved && restored).toBe(false);
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
