// Example: create, list and delete a namespace in the test cluster.
import { CoreV1Api } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { useKubeConfig } from 'k3s-vm/vitest';

describe('namespaces', () => {
  const api = useKubeConfig().makeApiClient(CoreV1Api);
  const name = `example-ns-${Date.now().toString(36)}`;

  it('creates a namespace', async () => {
    const created = await api.createNamespace({ body: { metadata: { name, labels: { example: 'k8s-namespaces' } } } });
    expect(created.metadata?.name).toBe(name);
  });

  it('lists it', async () => {
    const list = await api.listNamespace({ labelSelector: 'example=k8s-namespaces' });
    expect(list.items.map((ns) => ns.metadata?.name)).toContain(name);
  });

  it('deletes it', async () => {
    await api.deleteNamespace({ name });
    await expect
      .poll(
        async () => {
          try {
            const ns = await api.readNamespace({ name });
            return ns.status?.phase;
          } catch (error) {
            return (error as { code?: number }).code === 404 ? 'gone' : String(error);
          }
        },
        { timeout: 60_000, interval: 250 },
      )
      .toBe('gone');
  });
});
