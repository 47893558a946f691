// Example: install a CustomResourceDefinition from a manifest file (server-side apply, waited for until Established), then create, list and delete custom resources.
import { fileURLToPath } from 'node:url';
import { dirname } from 'node:path';
import { CustomObjectsApi } from '@kubernetes/client-node';
import { applyManifests } from 'k3s-vm';
import { beforeAll, describe, expect, it } from 'vitest';
import { useK3sVm, useKubeConfig } from 'k3s-vm/vitest';

const crdFile = fileURLToPath(new URL('./manifests/backups-crd.yaml', import.meta.url));
const group = { group: 'example.k3s-vm.dev', version: 'v1', plural: 'backups' };
const namespace = 'default';
const name = `nightly-${Date.now().toString(36)}`;

describe('a custom resource', () => {
  const cluster = useK3sVm();
  const api = useKubeConfig().makeApiClient(CustomObjectsApi);

  beforeAll(async () => {
    // The same as K3S_VM_MANIFESTS=examples/manifests or `npx k3s-vm apply examples/manifests`;
    // on a kept VM an unchanged file is skipped, on an existing cluster it is applied again.
    const options = cluster.kind === 'vm' ? { dir: dirname(cluster.kubeconfigPath) } : {};
    await applyManifests([crdFile], options);
  });

  it('creates a Backup', async () => {
    const created = (await api.createNamespacedCustomObject({
      ...group,
      namespace,
      body: { apiVersion: 'example.k3s-vm.dev/v1', kind: 'Backup', metadata: { name }, spec: { schedule: '0 3 * * *', keep: 7 } },
    })) as { metadata: { name: string }; spec: unknown };
    expect(created.metadata.name).toBe(name);
    expect(created.spec).toEqual({ schedule: '0 3 * * *', keep: 7 });
  });

  it('lists it', async () => {
    const list = (await api.listNamespacedCustomObject({ ...group, namespace })) as { items: Array<{ metadata: { name: string } }> };
    expect(list.items.map((item) => item.metadata.name)).toContain(name);
  });

  it('deletes it', async () => {
    await api.deleteNamespacedCustomObject({ ...group, namespace, name });
    await expect
      .poll(
        async () => {
          try {
            await api.getNamespacedCustomObject({ ...group, namespace, name });
            return 'still there';
          } catch (error) {
            return (error as { code?: number }).code === 404 ? 'gone' : String(error);
          }
        },
        { timeout: 30_000, interval: 250 },
      )
      .toBe('gone');
  });
});
