// Example: a pod per pull request — the pull request's image built and imported without a registry, namespace and pod with labels, wait until Running, read its logs, clean up.
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { CoreV1Api, type V1Pod } from '@kubernetes/client-node';
import { importImages } from 'k3s-vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useK3sVm, useKubeConfig } from 'k3s-vm/vitest';
import { writeImageArchive } from '../test/support/image-archive.js';

const pullRequest = 42;
const namespace = `pr-${pullRequest}-${Date.now().toString(36)}`;
const labels = { app: 'preview', 'pull-request': String(pullRequest) };

describe('a pod per pull request', () => {
  const api = useKubeConfig().makeApiClient(CoreV1Api);
  const cluster = useK3sVm();
  // The pull request's image: what `docker save` writes (here written with Node, from the
  // host's static busybox, so no Docker and no registry is needed), imported into the VM.
  const image = `k3s-vm.example/preview:pr-${pullRequest}`;

  beforeAll(async () => {
    await api.createNamespace({ body: { metadata: { name: namespace, labels } } });
    if (cluster.kind === 'vm') {
      const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((path) => existsSync(path));
      if (!busybox)
        throw new Error(
          'this example builds its image from a static busybox: install it (Debian and Ubuntu: apt-get install busybox-static)',
        );
      const archive = writeImageArchive(join(mkdtempSync(join(tmpdir(), 'preview-image-')), 'preview.tar.gz'), {
        name: image,
        gzip: true,
        executables: { '/bin/busybox': readFileSync(busybox) },
        links: { '/bin/sh': 'busybox', '/bin/echo': 'busybox', '/bin/sleep': 'busybox' },
        cmd: ['/bin/sh'],
      });
      // The running VM of this run, found by its state directory; an archive it has is skipped.
      const result = await importImages([archive], { dir: dirname(cluster.kubeconfigPath) });
      expect(result.images[0]?.names).toEqual([image]);
    }
    // Pods are refused until the namespace's default ServiceAccount exists, a moment after the namespace.
    for (let waited = 0; waited < 30_000; waited += 200) {
      const accounts = await api.listNamespacedServiceAccount({ namespace });
      if (accounts.items.some((sa) => sa.metadata?.name === 'default')) break;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  });

  afterAll(async () => {
    await api.deleteNamespace({ name: namespace }).catch(() => undefined);
  });

  it('starts the preview pod with the pull request labels', async () => {
    const pod: V1Pod = {
      metadata: { name: 'preview', labels },
      spec: {
        restartPolicy: 'Never',
        // Never: only the image imported above, never a registry. (An existing cluster cannot be
        // imported into: there the image must come from a registry the cluster pulls from.)
        containers: [
          {
            name: 'app',
            image: cluster.kind === 'vm' ? image : 'busybox:stable',
            imagePullPolicy: cluster.kind === 'vm' ? 'Never' : 'IfNotPresent',
            command: ['sh', '-c', `echo hello from pr-${pullRequest} && sleep 3600`],
          },
        ],
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
