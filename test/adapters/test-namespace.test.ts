// The namespace fixture hands a namespace over only once pods can be created in it.
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { beforeAll, describe, expect, it } from 'vitest';
import { createNamespaceFor, testNamespaceName } from '../../src/adapters/test-namespace.js';
import { useFakeApi } from '../fixtures/fake-k3s-api/helpers.js';

// The fake API makes a namespace's default ServiceAccount this long after the namespace, as the controller does.
const serviceAccountDelayMs = 600;
const startApi = useFakeApi();
let kubeConfig: KubeConfig;

beforeAll(async () => {
  kubeConfig = (await startApi({ serviceAccountDelayMs })).kc;
});

const pod = (namespace: string) => ({
  namespace,
  body: { metadata: { name: 'p' }, spec: { containers: [{ name: 'c', image: 'busybox', imagePullPolicy: 'Never' }] } },
});

describe('the namespace of a test', () => {
  it('is refused pods until its default ServiceAccount exists (the race the fixture waits out)', async () => {
    const core = kubeConfig.makeApiClient(CoreV1Api);
    const name = testNamespaceName('raw');
    await core.createNamespace({ body: { metadata: { name } } });
    const refused = (await core.createNamespacedPod(pod(name)).catch((e: unknown) => e)) as { code?: number };
    expect(refused.code).toBe(403);
  });

  it('is handed over once the ServiceAccount exists, so a pod is accepted at once', async () => {
    const started = Date.now();
    const namespace = await createNamespaceFor('waits for the ServiceAccount', kubeConfig, 'rtest-1');
    expect(Date.now() - started).toBeGreaterThanOrEqual(serviceAccountDelayMs - 50);
    const core = kubeConfig.makeApiClient(CoreV1Api);
    await expect(core.createNamespacedPod(pod(namespace.name))).resolves.toMatchObject({ metadata: { name: 'p' } });
    const ns = await core.readNamespace({ name: namespace.name });
    expect(ns.metadata?.labels).toMatchObject({ 'app.kubernetes.io/managed-by': 'k3s-vm', 'k3s-vm/run-id': 'rtest-1' });
    await namespace.delete();
    const deleted = await core.readNamespace({ name: namespace.name }).catch((e: unknown) => e);
    expect(String((deleted as { status?: { phase?: string } }).status?.phase ?? (deleted as { code?: number }).code)).toMatch(
      /^(Terminating|404)$/,
    );
  });

  it('has a DNS-1123 name of at most 63 characters made from the test name', () => {
    const name = testNamespaceName('A very long test name: with Capitals, punctuation & more than forty characters');
    expect(name).toMatch(/^t-[a-z0-9-]+-[a-z0-9]{6}$/);
    expect(name.length).toBeLessThanOrEqual(63);
  });
});
