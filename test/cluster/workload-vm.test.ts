// Your workload in a booted test guest: image archives streamed into its (fake) containerd, manifests applied, both skipped when unchanged.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api, CustomObjectsApi, type V1Pod } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../src/adapters/cli/run.js';
import { loadWorkload, startCluster, type StartedCluster } from '../../src/cluster/index.js';
import { K3sVmError } from '../../src/errors.js';
import { memoryIo } from '../support/cli.js';
import { writeImageArchive } from '../support/image-archive.js';
import { recordingLogger, testGuestEnv, testGuestOptions, type RecordingLogger } from '../support/test-guest.js';

const work = mkdtempSync(join(tmpdir(), 'k3s-vm-workload-vm-'));
const write = (name: string, text: string) => {
  const path = join(work, name);
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, text);
  return path;
};

const appArchive = writeImageArchive(join(work, 'app.tar.gz'), { name: 'k3s-vm.test/app:1', gzip: true, paddingBytes: 256 * 1024 });
const toolArchive = writeImageArchive(join(work, 'tool-oci.tar'), { name: 'k3s-vm.test/tool:2', format: 'oci' });
const manifestsDir = join(work, 'manifests');
write(
  'manifests/10-crd.yaml',
  `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
`,
);
write(
  'manifests/20-gadget.yaml',
  'apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: one, namespace: default}\nspec: {colour: blue}\n',
);
write(
  'manifests/30-app.yaml',
  `apiVersion: apps/v1
kind: Deployment
metadata: {name: app, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers: [{name: app, image: k3s-vm.test/app:1, imagePullPolicy: Never}]
`,
);

const options = testGuestOptions('workload', { images: [appArchive, toolArchive], manifests: [manifestsDir], waitForRollout: true });
let cluster: StartedCluster;
let logger: RecordingLogger;

beforeAll(async () => {
  logger = recordingLogger();
  cluster = await startCluster({ ...options, logger });
});

afterAll(async () => {
  await cluster?.stop();
});

const pod = (name: string, image: string): V1Pod => ({
  metadata: { name },
  spec: { restartPolicy: 'Never', containers: [{ name: 'main', image, imagePullPolicy: 'Never' }] },
});

async function until<T>(read: () => Promise<T>, done: (value: T) => boolean, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (done(value) || Date.now() > end) return value;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

describe('images and manifests at start (test guest)', () => {
  it('imports each archive and applies each file after readiness, a progress line each with size and time', () => {
    const workload = logger.lines.filter((line) => /^(importing|imported|applied|image|manifest) /.test(line));
    expect(workload).toEqual([
      expect.stringMatching(/^importing image \S*app\.tar\.gz \(2\d\d kB, k3s-vm\.test\/app:1\)$/),
      expect.stringMatching(/^imported image \S*app\.tar\.gz \(2\d\d kB, k3s-vm\.test\/app:1\) in \d+\.\d\d s$/),
      expect.stringMatching(/^importing image \S*tool-oci\.tar \(\d+\.\d kB, k3s-vm\.test\/tool:2\)$/),
      expect.stringMatching(/^imported image \S*tool-oci\.tar \(\d+\.\d kB, k3s-vm\.test\/tool:2\) in \d+\.\d\d s$/),
      expect.stringMatching(/^applied manifest \S*10-crd\.yaml \(1 object, \d+ B\) in \d+\.\d\d s$/),
      expect.stringMatching(/^applied manifest \S*20-gadget\.yaml \(1 object, \d+ B\) in \d+\.\d\d s$/),
      expect.stringMatching(/^applied manifest \S*30-app\.yaml \(1 object, \d+ B\) in \d+\.\d\d s$/),
    ]);
    const ready = logger.lines.findIndex((line) => /ready/i.test(line) && !/^(importing|imported)/.test(line));
    expect(ready).toBeLessThan(logger.lines.findIndex((line) => line.startsWith('importing ')));
  });

  it("reports the imported images in the node's status.images", async () => {
    const core = cluster.kubeConfig().makeApiClient(CoreV1Api);
    const node = await until(
      () => core.readNode({ name: 'test-guest' }),
      (n) => (n.status?.images ?? []).length >= 2,
    );
    const names = (node.status?.images ?? []).flatMap((image) => image.names ?? []);
    expect(names).toEqual(expect.arrayContaining(['k3s-vm.test/app:1', 'k3s-vm.test/tool:2']));
    expect(names.some((name) => /^k3s-vm\.test\/app@sha256:[0-9a-f]{64}$/.test(name))).toBe(true);
  });

  it('runs a pod with an imported image and imagePullPolicy Never; one with an image it does not have waits with ErrImageNeverPull', async () => {
    const core = cluster.kubeConfig().makeApiClient(CoreV1Api);
    await core.createNamespacedPod({ namespace: 'default', body: pod('imported', 'k3s-vm.test/app:1') });
    await core.createNamespacedPod({ namespace: 'default', body: pod('absent', 'k3s-vm.test/absent:1') });
    const running = await until(
      () => core.readNamespacedPod({ namespace: 'default', name: 'imported' }),
      (p) => p.status?.phase === 'Running',
    );
    expect(running.status?.phase).toBe('Running');
    expect(running.status?.containerStatuses?.[0]?.imageID).toMatch(/^k3s-vm\.test\/app@sha256:[0-9a-f]{64}$/);
    const absent = await until(
      () => core.readNamespacedPod({ namespace: 'default', name: 'absent' }),
      (p) => p.status?.containerStatuses?.[0]?.state?.waiting?.reason === 'ErrImageNeverPull',
    );
    expect(absent.status?.phase).toBe('Pending');
    expect(absent.status?.containerStatuses?.[0]?.state?.waiting?.reason).toBe('ErrImageNeverPull');
  });

  it('applied the custom resource after its CRD was Established', async () => {
    const gadget = (await cluster
      .kubeConfig()
      .makeApiClient(CustomObjectsApi)
      .getNamespacedCustomObject({ group: 'example.com', version: 'v1', namespace: 'default', plural: 'gadgets', name: 'one' })) as {
      spec: unknown;
    };
    expect(gadget.spec).toEqual({ colour: 'blue' });
  });

  it('a second start (attach) imports and applies nothing that is unchanged, by digest', async () => {
    const second = recordingLogger();
    const again = await startCluster({ ...options, logger: second });
    try {
      expect(again.booted).toBe(false);
      expect(second.lines.filter((line) => /^(importing|imported|applied)/.test(line))).toEqual([]);
      expect(second.lines.filter((line) => / already imported | unchanged since /.test(line))).toHaveLength(5);
      const started = Date.now();
      const result = await loadWorkload(again, { images: [appArchive, toolArchive] });
      expect(result.images.map((image) => image.imported)).toEqual([false, false]);
      // One SSH handshake and one `ls` in the guest (software-emulated here).
      expect(Date.now() - started).toBeLessThan(2000);
    } finally {
      await again.stop();
    }
  });

  it('re-applies a changed manifest, and only that one', async () => {
    write(
      'manifests/20-gadget.yaml',
      'apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: one, namespace: default}\nspec: {colour: green}\n',
    );
    const lines = recordingLogger();
    const result = await loadWorkload(cluster, { manifests: [manifestsDir], logger: lines });
    expect(result.manifests.map((m) => m.applied)).toEqual([false, true, false]);
    const gadget = (await cluster
      .kubeConfig()
      .makeApiClient(CustomObjectsApi)
      .getNamespacedCustomObject({ group: 'example.com', version: 'v1', namespace: 'default', plural: 'gadgets', name: 'one' })) as {
      spec: unknown;
    };
    expect(gadget.spec).toEqual({ colour: 'green' });
  });

  it('records every file of a large batch, so that none is applied twice', async () => {
    const many = join(work, 'many');
    for (let i = 0; i < 30; i++)
      write(
        `many/cm-${String(i).padStart(2, '0')}.yaml`,
        `apiVersion: v1\nkind: ConfigMap\nmetadata: {name: many-${i}, namespace: default}\ndata: {i: "${i}"}\n`,
      );
    const first = await loadWorkload(cluster, { manifests: [many] });
    expect(first.manifests.filter((m) => m.applied)).toHaveLength(30);
    const second = await loadWorkload(cluster, { manifests: [many] });
    expect(second.manifests.filter((m) => m.applied)).toHaveLength(0);
  });

  it('k3s-vm images import streams a new archive into the running VM, and images ls lists it', async () => {
    const extra = writeImageArchive(join(work, 'extra.tar'), { name: 'k3s-vm.test/extra:3' });
    const io = memoryIo({ ...testGuestEnv(), K3S_VM_DIR: options.dir, K3S_VM_NAME: 'test-guest' }, work);
    expect(await run(['images', 'import', extra], io)).toBe(0);
    expect(io.err()).toMatch(/imported image .*extra\.tar \(\d+\.\d kB, k3s-vm\.test\/extra:3\) in \d+\.\d\d s/);
    expect(await run(['images', 'import', extra], io)).toBe(0);
    expect(io.err()).toMatch(/image .*extra\.tar \(.*\) already imported \(sha256 [0-9a-f]{12}\)/);
    io.clear();
    expect(await run(['images', 'ls'], io)).toBe(0);
    expect(io.out().split('\n').filter(Boolean)).toEqual(
      expect.arrayContaining(['k3s-vm.test/app:1', 'k3s-vm.test/tool:2', 'k3s-vm.test/extra:3']),
    );
  });

  it('a broken manifest or a file that is not an archive fails the start naming the file; the VM stays up and usable', async () => {
    const broken = write(
      'broken/bad.yaml',
      'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fine, namespace: default}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: no-containers, namespace: default}\nspec: {containers: []}\n',
    );
    const error = await startCluster({ ...options, manifests: [broken], logger: recordingLogger() }).then(
      () => undefined,
      (e: unknown) => e as K3sVmError,
    );
    expect(error).toBeInstanceOf(K3sVmError);
    expect(error?.code).toBe('APPLY_FAILED');
    expect(error?.message).toMatch(
      new RegExp(`^manifest ${broken}, document 2 \\(line 5\\): applying Pod default/no-containers failed: HTTP 422`),
    );
    expect(error?.details).toBe(`applied from ${broken} before it: ConfigMap default/fine`);

    const notAnArchive = write('notes.tar', 'just text\n'.repeat(100));
    const refused = await startCluster({ ...options, images: [notAnArchive] }).then(
      () => undefined,
      (e: unknown) => e as K3sVmError,
    );
    expect(refused?.code).toBe('WORKLOAD_INVALID');
    expect(refused?.message).toBe(`${notAnArchive} is not an image archive: it is not a tar archive`);

    expect((await cluster.exec('echo still here')).stdout).toBe('still here\n');
    expect((await cluster.kubeConfig().makeApiClient(CoreV1Api).listNamespace()).items.length).toBeGreaterThan(0);
  });
});
