// The existing-cluster mode against a real API server: the real guest's kubeconfig handed over
// as a developer's, next to a context that must never be used. Labels, the allow-list, the
// sweep of dead runs, and a namespace without k3s-vm's labels that survives everything.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { openCluster, runIdLabel, runLabels, runNamespaceName, sweepDeadRuns, type ConnectedCluster } from '../../src/cluster/index.js';
import type { K3sVmError } from '../../src/errors.js';
import { describeReal, realKubeConfig } from '../support/real-cluster.js';
import { recordingLogger, repoRoot } from '../support/test-guest.js';

describeReal('an existing cluster that is real Kubernetes', () => {
  const work = mkdtempSync(join(tmpdir(), 'k3s-vm-real-existing-'));
  const kubeconfigFile = join(work, 'kubeconfig');
  const unlabelled = `team-app-${Date.now().toString(36)}`;
  let core: CoreV1Api;

  beforeAll(async () => {
    const real = realKubeConfig();
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [
        { ...real.getCurrentCluster()!, name: 'test' },
        { name: 'prod', server: 'https://prod.invalid:6443', skipTLSVerify: false },
      ],
      users: [
        { ...real.getCurrentUser()!, name: 'test' },
        { name: 'prod', token: 'secret' },
      ],
      contexts: [
        { name: 'ci-real', cluster: 'test', user: 'test' },
        { name: 'prod-eks', cluster: 'prod', user: 'prod' },
      ],
      currentContext: 'prod-eks',
    });
    writeFileSync(kubeconfigFile, kc.exportConfig(), { mode: 0o600 });
    core = real.makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: unlabelled, labels: { app: 'team' } } } });
  });
  afterAll(async () => {
    await core.deleteNamespace({ name: unlabelled }).catch(() => undefined);
  });

  const existing = (extra: Record<string, string> = {}) => ({
    projectRoot: repoRoot,
    env: { K3S_VM_KUBECONFIG: kubeconfigFile, K3S_VM_ALLOW_CONTEXTS: 'ci-*', ...extra },
  });
  const namespaces = async () =>
    (await core.listNamespace()).items.filter((n) => !n.metadata?.deletionTimestamp).map((n) => n.metadata!.name!);

  it('refuses the current context when the allow-list does not name it', async () => {
    const error = (await openCluster(existing()).catch((e: unknown) => e)) as K3sVmError;
    expect(error.code).toBe('CONTEXT_NOT_ALLOWED');
    expect(error.message).toContain('context "prod-eks"');
  });

  it('waits with the named steps, labels what the run makes, deletes it at the end, and leaves the rest', async () => {
    const logger = recordingLogger();
    const cluster = (await openCluster({ ...existing({ K3S_VM_CONTEXT: 'ci-real' }), logger })) as ConnectedCluster;
    try {
      expect(logger.lines.filter((l) => l.startsWith('ready: ')).map((l) => /"([^"]+)"/.exec(l)?.[1])).toEqual([
        'kubeconfig present',
        'API /readyz ok',
        'default ServiceAccount exists',
      ]);
      const runNamespace = await core.readNamespace({ name: runNamespaceName(cluster.runId) });
      expect(runNamespace.metadata?.labels?.[runIdLabel]).toBe(cluster.runId);
      await core.createNamespace({ body: { metadata: { name: `t-real-${cluster.runId}`, labels: runLabels(cluster.runId) } } });
    } finally {
      await cluster.stop();
    }
    const left = await namespaces();
    expect(left).not.toContain(runNamespaceName(cluster.runId));
    expect(left).not.toContain(`t-real-${cluster.runId}`);
    expect(left).toContain(unlabelled);
  });

  it('sweeps the namespaces of a dead run and keeps a live run’s and an unlabelled one', async () => {
    const now = Date.now();
    const hourAgo = now - 3600_000;
    const dead = `rdead-${now.toString(36)}`;
    const live = `rlive-${now.toString(36)}`;
    const create = (name: string, labels: Record<string, string>, annotations: Record<string, string> = {}) =>
      core.createNamespace({ body: { metadata: { name, labels, annotations } } });
    await create(runNamespaceName(dead), runLabels(dead, hourAgo), { 'k3s-vm/heartbeat': new Date(hourAgo).toISOString() });
    await create(`t-${dead}`, runLabels(dead, hourAgo));
    await create(runNamespaceName(live), runLabels(live, hourAgo), { 'k3s-vm/heartbeat': new Date(now - 5000).toISOString() });
    const deleted = await sweepDeadRuns(core, { ownRunId: 'rmine-1', sweepAfterSeconds: 600, logger: recordingLogger(), now });
    expect(deleted).toEqual(expect.arrayContaining([runNamespaceName(dead), `t-${dead}`]));
    expect(deleted).not.toContain(runNamespaceName(live));
    expect(deleted).not.toContain(unlabelled);
    const left = await namespaces();
    expect(left).toEqual(expect.arrayContaining([runNamespaceName(live), unlabelled]));
    await core.deleteNamespace({ name: runNamespaceName(live) });
  });
});
