// Example: a pod per pull request — namespace and pod with labels, wait until Running, read its logs, clean up.
import { CoreV1Api, type V1Pod } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useKubeConfig } from 'k3s-vm/vitest';

const pullRequest = 42;
const namespace = `pr-${pullRequest}-${Date.now().toString(36)}`;
const labels = { app: 'preview', 'pull-request': String(pullRequest) };

describe('a pod per pull request', () => {
  const api = useKubeConfig().makeApiClient(CoreV1Api);
  let image = 'busybox:stable';

  beforeAll(async () => {
    // Offline clusters can only run images already on the node (K3s's air-gap images include busybox).
    const nodes = await api.listNode();
    const local = nodes.items.flatMap((node) => node.status?.images ?? []).flatMap((i) => i.names ?? []);
    image = local.find((name) => /busybox/.test(name) && !name.includes('@sha256')) ?? image;
    await api.createNamespace({ body: { metadata: { name: namespace, labels } } });
  });

  afterAll(async () => {
    await api.deleteNamespace({ name: namespace }).catch(() => undefined);
  });

  it('starts the preview pod with the pull request labels', async () => {
    const pod: V1Pod = {
      metadata: { name: 'preview', labels },
      spec: {
        restartPolicy: 'Never',
        containers: [{ name: 'app', image, imagePullPolicy: 'IfNotPresent', command: ['sh', '-c', `echo hello from pr-${pullRequest} && sleep 3600`] }],
      },
    };
    const created = await api.createNamespacedPod({ namespace, body: pod });
    expect(created.metadata?.labels).toMatchObject(labels);
    const found = await api.listNamespacedPod({ namespace, labelSelector: `pull-request=${pullRequest}` });
    expect(found.items.map((p) => p.metadata?.name)).toEqual(['preview']);
  });

  it('waits until the pod is Running', async () => {
    await expect
      .poll(async () => (await api.readNamespacedPod({ name: 'preview', namespace })).status?.phase, { timeout: 120_000, interval: 500 })
      .toBe('Running');
  });

  it('reads what the pod printed', async () => {
    await expect
      .poll(async () => api.readNamespacedPodLog({ name: 'preview', namespace, container: 'app' }), { timeout: 30_000, interval: 500 })
      .toContain(`hello from pr-${pullRequest}`);
  });

  it('cleans up the pod and the namespace', async () => {
    await api.deleteNamespacedPod({ name: 'preview', namespace, gracePeriodSeconds: 0 });
    await api.deleteNamespace({ name: namespace });
    await expect
      .poll(
        async () => {
          try {
            await api.readNamespace({ name: namespace });
            return 'still there';
          } catch (error) {
            return (error as { code?: number }).code === 404 ? 'gone' : String(error);
          }
        },
        { timeout: 120_000, interval: 500 },
      )
      .toBe('gone');
  });
});
