// The real-Kubernetes test guest itself: the node registered by the real kubelet, the default
// ServiceAccount made by the real controller manager, k3s ctr at the real containerd, and a pod
// run by real runc on the CNI bridge — reached through k3s-vm's unchanged code paths.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoordinationV1Api, CoreV1Api } from '@kubernetes/client-node';
import { beforeAll, expect, it } from 'vitest';
import { execInCluster, importImages } from '../../src/cluster/index.js';
import { writeImageArchive } from '../support/image-archive.js';
import { kubernetesVersion } from '../support/real-guest.js';
import { describeReal, realGuest, realKubeConfig } from '../support/real-cluster.js';

describeReal('the real-Kubernetes test guest', () => {
  let core: CoreV1Api;
  let dir: string;
  beforeAll(() => {
    core = realKubeConfig().makeApiClient(CoreV1Api);
    dir = realGuest()!.options.dir;
  });

  it('reached ready through every readiness step, each reported with its time', () => {
    const steps = realGuest()!
      .bootLog.map((line) => /^ready: step \d+ of \d+ "([^"]+)" \([\d.]+ s\)$/.exec(line)?.[1])
      .filter((name) => name !== undefined);
    expect(steps).toEqual(
      expect.arrayContaining(['SSH answers', 'k3s service active', 'kubeconfig present', 'API /readyz ok', 'node Ready']),
    );
    expect(steps.at(-1)).toBe('default ServiceAccount exists');
  });

  it('has its node registered by the real kubelet of the pinned release, on containerd, Ready', async () => {
    const nodes = (await core.listNode()).items;
    expect(nodes.map((node) => node.metadata?.name)).toEqual(['real-guest']);
    const info = nodes[0]!.status!.nodeInfo!;
    expect(info.kubeletVersion).toBe(kubernetesVersion());
    expect(info.containerRuntimeVersion).toMatch(/^containerd:\/\/1\./);
    expect(nodes[0]!.status!.conditions!.find((c) => c.type === 'Ready')?.status).toBe('True');
    const lease = await realKubeConfig()
      .makeApiClient(CoordinationV1Api)
      .readNamespacedLease({ name: 'real-guest', namespace: 'kube-node-lease' });
    expect(lease.spec?.holderIdentity).toBe('real-guest');
  });

  it("has what the real controller manager makes in every namespace: the default ServiceAccount and the cluster's CA", async () => {
    const account = await core.readNamespacedServiceAccount({ name: 'default', namespace: 'default' });
    expect(account.metadata?.name).toBe('default');
    const ca = await core.readNamespacedConfigMap({ name: 'kube-root-ca.crt', namespace: 'default' });
    expect(ca.data?.['ca.crt']).toMatch(/^-----BEGIN CERTIFICATE-----/);
  });

  it('keeps time by the TSC on both of its CPUs under emulation, not by the emulated HPET', async () => {
    // Without tsc=reliable (src/qemu/launch.ts) the kernel marks two emulated CPUs' TSCs out of
    // step and reads the clock from the HPET, which made the idle control plane 2.4 times as costly.
    // Under KVM the kernel picks kvm-clock by itself.
    const nproc = await execInCluster(['nproc'], { dir });
    expect(nproc.stdout.trim()).toBe('2');
    const source = await execInCluster(['cat', '/sys/devices/system/clocksource/clocksource0/current_clocksource'], { dir });
    expect(source.stdout.trim()).toBe(realGuest()!.options.accel === 'tcg' ? 'tsc' : 'kvm-clock');
  });

  it('answers k3s ctr from the real containerd, with the pause image in namespace k8s.io', async () => {
    const version = await execInCluster(['k3s', 'ctr', 'version'], { dir });
    expect(version.exitCode).toBe(0);
    expect(version.stdout).toMatch(/Server:\s+Version:\s+1\./);
    const images = await execInCluster(['k3s', 'ctr', '-n', 'k8s.io', 'images', 'ls', '-q'], { dir });
    expect(images.stdout.split('\n')).toContain('k3s-vm.test/pause:1');
    const active = await execInCluster(['systemctl', 'is-active', 'k3s'], { dir });
    expect(active.stdout.trim()).toBe('active');
  });

  it('runs a pod of an imported image with real runc, on the CNI bridge network, and reads its log', async () => {
    const image = 'k3s-vm.test/hello:1';
    const archive = writeImageArchive(join(mkdtempSync(join(tmpdir(), 'real-image-')), 'hello.tar'), {
      name: image,
      executables: { '/bin/busybox': readFileSync('/bin/busybox') },
      links: { '/bin/sh': 'busybox' },
      cmd: ['/bin/sh'],
    });
    await importImages([archive], { dir });
    const namespace = `hello-${Date.now().toString(36)}`;
    await core.createNamespace({ body: { metadata: { name: namespace } } });
    try {
      await expect
        .poll(async () => (await core.listNamespacedServiceAccount({ namespace })).items.length, { timeout: 60_000, interval: 250 })
        .toBeGreaterThan(0);
      await core.createNamespacedPod({
        namespace,
        body: {
          metadata: { name: 'hello' },
          spec: {
            restartPolicy: 'Never',
            containers: [
              {
                name: 'hello',
                image,
                imagePullPolicy: 'Never',
                command: ['/bin/sh', '-c', 'echo "uid=$(id -u) ip=$(ip -4 -o addr show eth0)"; sleep 3600'],
              },
            ],
          },
        },
      });
      await expect
        .poll(async () => (await core.readNamespacedPod({ name: 'hello', namespace })).status?.phase, { timeout: 180_000, interval: 500 })
        .toBe('Running');
      const pod = await core.readNamespacedPod({ name: 'hello', namespace });
      expect(pod.status?.podIP).toMatch(/^10\.42\.0\.\d+$/);
      await expect
        .poll(() => core.readNamespacedPodLog({ name: 'hello', namespace, container: 'hello' }), { timeout: 30_000, interval: 500 })
        .toContain(`ip=`);
      const log = await core.readNamespacedPodLog({ name: 'hello', namespace, container: 'hello' });
      expect(log).toContain('uid=0');
      expect(log).toContain(pod.status!.podIP!);
      // The container's process is runc's: seen from the guest, in a cgroup of the kubelet's
      // kubepods for this pod (inside the container, its cgroup namespace shows only "/").
      const uid = pod.metadata!.uid!;
      const inPod = await execInCluster(
        ['sh', '-c', `for p in /proc/[0-9]*; do grep -q "kubepods.*pod${uid}" "$p/cgroup" 2>/dev/null && cat "$p/comm"; done; true`],
        { dir },
      );
      expect(inPod.stdout.split('\n')).toContain('sleep');
    } finally {
      await core.deleteNamespace({ name: namespace, gracePeriodSeconds: 0 }).catch(() => undefined);
    }
  });
});
