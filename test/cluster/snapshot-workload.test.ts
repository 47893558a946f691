// The snapshot holds the workload (test guest, real QEMU): saved after the images and manifests are loaded,
// restored with nothing loaded again, and saved anew when a manifest changes.
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CustomObjectsApi } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { listImages, startCluster } from '../../src/cluster/index.js';
import type { SnapshotRecord } from '../../src/qemu/snapshot.js';
import { files } from '../../src/state/files.js';
import { InstanceDir } from '../../src/state/instance-dir.js';
import { writeImageArchive } from '../support/image-archive.js';
import { useStateDirs } from '../support/state-dirs.js';
import { recordingLogger } from '../support/test-guest.js';

const dirs = useStateDirs();
const work = mkdtempSync(join(tmpdir(), 'k3s-vm-snapwork-'));
const write = (name: string, text: string) => {
  const path = join(work, name);
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, text);
  return path;
};
const archive = writeImageArchive(join(work, 'app.tar.gz'), { name: 'k3s-vm.test/app:1', gzip: true, paddingBytes: 128 * 1024 });
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
const gadget = (colour: string) =>
  write(
    'manifests/20-gadget.yaml',
    `apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: one, namespace: default}\nspec: {colour: ${colour}}\n`,
  );
gadget('blue');
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

const record = (dir: InstanceDir) => JSON.parse(readFileSync(dir.file(files.snapshotRecord), 'utf8')) as SnapshotRecord;
const loaded = (lines: readonly string[]) => lines.filter((line) => /^(importing|imported|applied manifest)/.test(line));

describe('a snapshot with the workload in it', () => {
  it(
    'is saved after the images, manifests and rollout, restored with nothing imported or applied, and saved again when a manifest changes',
    { timeout: 480_000 },
    async () => {
      const options = dirs.options('snapwl', {
        snapshot: true,
        images: [archive],
        manifests: [join(work, 'manifests')],
        waitForRollout: true,
      });
      const dir = new InstanceDir(options.dir);

      // Cold boot: loaded, then saved (the save's line after the last manifest's).
      const coldLogger = recordingLogger();
      const cold = await startCluster({ ...options, logger: coldLogger });
      expect(cold.timings.restored).toBe(false);
      expect(loaded(coldLogger.lines)).toHaveLength(5);
      const savedAt = coldLogger.lines.findIndex((line) => line.startsWith('saved the ready VM with its workload'));
      const lastApplied = coldLogger.lines.findIndex((line) => /^applied manifest \S*manifests\/30-app\.yaml/.test(line));
      expect(lastApplied).toBeGreaterThan(0);
      expect(savedAt).toBeGreaterThan(lastApplied);
      expect(coldLogger.lines.filter((line) => line.startsWith('saved the ready VM'))).toHaveLength(1);
      const first = record(dir);
      expect(first.workload).toMatchObject({ waitForRollout: true });
      expect(first.workload!.images).toHaveLength(1);
      expect(first.workload!.manifests).toHaveLength(3);
      await cold.stop();

      // Restored: the workload is in it, nothing is loaded, nothing saved.
      const restoredLogger = recordingLogger();
      const restored = await startCluster({ ...options, logger: restoredLogger });
      expect(restored.timings.restored, restoredLogger.lines.join('\n')).toBe(true);
      expect(restoredLogger.lines).toContainEqual(
        'the restored snapshot holds the workload (1 image, 3 manifest files): nothing is imported or applied',
      );
      expect(loaded(restoredLogger.lines)).toEqual([]);
      expect(restoredLogger.lines.some((line) => line.startsWith('saved the ready VM'))).toBe(false);
      expect(await listImages(options)).toContain('k3s-vm.test/app:1');
      const custom = restored.kubeConfig().makeApiClient(CustomObjectsApi);
      const read = () =>
        custom.getNamespacedCustomObject({
          group: 'example.com',
          version: 'v1',
          namespace: 'default',
          plural: 'gadgets',
          name: 'one',
        }) as Promise<{
          spec: { colour: string };
        }>;
      expect((await read()).spec.colour).toBe('blue');
      // A rewind goes back to the state with the workload, not to the empty cluster.
      await restored.exec('true');
      await custom.deleteNamespacedCustomObject({
        group: 'example.com',
        version: 'v1',
        namespace: 'default',
        plural: 'gadgets',
        name: 'one',
      });
      await restored.rewind();
      expect((await read()).spec.colour).toBe('blue');
      await restored.stop();
      expect(record(dir)).toEqual(first);

      // A changed manifest: loaded on top of the restored cluster, then saved again.
      gadget('red');
      const changedLogger = recordingLogger();
      const changed = await startCluster({ ...options, logger: changedLogger });
      expect(changed.timings.restored, changedLogger.lines.join('\n')).toBe(true);
      expect(changedLogger.lines).toContainEqual(expect.stringMatching(/^the workload changed since the snapshot was saved/));
      expect(loaded(changedLogger.lines)).toEqual([expect.stringMatching(/^applied manifest \S*manifests\/20-gadget\.yaml/)]);
      expect(changedLogger.lines.some((line) => line.startsWith('saved the ready VM with its workload'))).toBe(true);
      const second = record(dir);
      expect(second.workload!.images).toEqual(first.workload!.images);
      expect(second.workload!.manifests[1]).not.toBe(first.workload!.manifests[1]);
      await changed.stop();

      // And the next start restores that one.
      const againLogger = recordingLogger();
      const again = await startCluster({ ...options, logger: againLogger });
      expect(again.timings.restored, againLogger.lines.join('\n')).toBe(true);
      expect(loaded(againLogger.lines)).toEqual([]);
      const customAgain = again.kubeConfig().makeApiClient(CustomObjectsApi);
      const gadgetNow = (await customAgain.getNamespacedCustomObject({
        group: 'example.com',
        version: 'v1',
        namespace: 'default',
        plural: 'gadgets',
        name: 'one',
      })) as { spec: { colour: string } };
      expect(gadgetNow.spec.colour).toBe('red');
      await again.stop();
    },
  );
});
