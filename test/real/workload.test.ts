// Your workload on the real-Kubernetes test guest: images into the real containerd
// (`images import` / `images ls`), manifests server-side applied to the real API server (a CRD
// waited for until Established, the server's own 409 and 422 in APPLY_FAILED), and a real
// Deployment waited for until rolled out.
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { ApiextensionsV1Api, AppsV1Api, CoreV1Api } from '@kubernetes/client-node';
import { beforeAll, expect, it } from 'vitest';
import { applyManifests, importImages, listImages } from '../../src/cluster/index.js';
import { K3sVmError } from '../../src/errors.js';
import { writeImageArchive } from '../support/image-archive.js';
import { describeReal, realGuest, realKubeConfig } from '../support/real-cluster.js';

const work = mkdtempSync(join(tmpdir(), 'k3s-vm-real-workload-'));
function write(name: string, text: string): string {
  const path = join(work, name);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, text);
  return path;
}
const failure = async (promise: Promise<unknown>) =>
  (await promise.then(
    () => undefined,
    (e: unknown) => e,
  )) as K3sVmError;

describeReal('a workload on real Kubernetes', () => {
  let dir: string;
  const suffix = Date.now().toString(36);
  const namespace = `workload-${suffix}`;
  const image = 'k3s-vm.test/web:1';
  beforeAll(async () => {
    dir = realGuest()!.options.dir;
    const archive = writeImageArchive(join(work, 'web.tar.gz'), {
      name: image,
      gzip: true,
      executables: { '/bin/busybox': readFileSync('/bin/busybox') },
      links: { '/bin/sh': 'busybox', '/bin/httpd': 'busybox' },
      cmd: ['/bin/sh'],
    });
    const result = await importImages([archive], { dir });
    expect(result.images.map((i) => [i.names, i.imported])).toEqual([[[image], true]]);
    write('ns.yaml', `apiVersion: v1\nkind: Namespace\nmetadata: {name: ${namespace}}\n`);
    await applyManifests([join(work, 'ns.yaml')], { dir });
  });

  it('lists an imported image as the real containerd has it, and skips it when imported again', async () => {
    expect(await listImages({ dir })).toContain(image);
    const again = await importImages([join(work, 'web.tar.gz')], { dir });
    expect(again.images[0]?.imported).toBe(false);
  });

  it('applies a CRD, waits until the real API server calls it Established, then a custom resource of it', async () => {
    const group = `${suffix}.k3s-vm.test`;
    const crd = write(
      'crd/1-crd.yaml',
      `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.${group}}
spec:
  group: ${group}
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: {type: object, properties: {size: {type: integer, minimum: 1}}}
`,
    );
    write(
      'crd/2-widget.yaml',
      `apiVersion: ${group}/v1\nkind: Widget\nmetadata: {name: small, namespace: ${namespace}}\nspec: {size: 3}\n`,
    );
    const result = await applyManifests([dirname(crd)], { dir });
    expect(result.manifests.map((m) => m.objects)).toEqual([[`CustomResourceDefinition widgets.${group}`], [`Widget ${namespace}/small`]]);
    const established = await realKubeConfig()
      .makeApiClient(ApiextensionsV1Api)
      .readCustomResourceDefinition({ name: `widgets.${group}` });
    expect(established.status?.conditions?.find((c) => c.type === 'Established')?.status).toBe('True');
  });

  it("reports the real server's 422 for an invalid object, with the API's message", async () => {
    const path = write(
      'invalid.yaml',
      `apiVersion: v1\nkind: Pod\nmetadata: {name: nothing-to-run, namespace: ${namespace}}\nspec: {containers: []}\n`,
    );
    const error = await failure(applyManifests([path], { dir }));
    expect(error.code).toBe('APPLY_FAILED');
    expect(error.message).toMatch(/applying Pod .*\/nothing-to-run failed: HTTP 422: .*spec\.containers: Required value/);
    expect(error.hint).toMatch(/rejected the object as invalid/);
  });

  it("reports the real server's 409 when another field manager owns a field", async () => {
    await realKubeConfig()
      .makeApiClient(CoreV1Api)
      .createNamespacedConfigMap({
        namespace,
        body: { metadata: { name: 'owned' }, data: { key: 'theirs' } },
        fieldManager: 'someone-else',
      });
    const path = write(
      'conflict.yaml',
      `apiVersion: v1\nkind: ConfigMap\nmetadata: {name: owned, namespace: ${namespace}}\ndata: {key: ours}\n`,
    );
    const error = await failure(applyManifests([path], { dir }));
    expect(error.code).toBe('APPLY_FAILED');
    expect(error.message).toMatch(/HTTP 409: Apply failed with 1 conflict: conflict with "someone-else"/);
    expect(error.hint).toMatch(/another field manager owns those fields/);
  });

  it('waits for a real Deployment of the imported image to roll out', async () => {
    const path = write(
      'deploy.yaml',
      `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: ${namespace}}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
        - {name: web, image: ${image}, imagePullPolicy: Never, command: [/bin/httpd, -f, -p, '8080']}
`,
    );
    await applyManifests([path], { dir, waitForRollout: true });
    const deployment = await realKubeConfig().makeApiClient(AppsV1Api).readNamespacedDeployment({ name: 'web', namespace });
    expect(deployment.status?.availableReplicas).toBe(1);
    expect(deployment.status?.updatedReplicas).toBe(1);
  });
});
