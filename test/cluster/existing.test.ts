// An existing cluster instead of a VM: against the fake K3s API test double on the host (no VM), and a test guest handed over.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, request as httpsRequest, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeK3sApi } from '../../fixtures/test-guest/fake-k3s-api/server.mjs';
import { run } from '../../src/adapters/cli/run.js';
import {
  contextAllowed,
  openCluster,
  runIdLabel,
  runLabels,
  runNamespaceName,
  startCluster,
  sweepDeadRuns,
  type ConnectedCluster,
} from '../../src/cluster/index.js';
import { K3sVmError } from '../../src/errors.js';
import { memoryIo } from '../support/cli.js';
import { linkPackage, runIn } from '../support/consumer.js';
import { useFakeApi } from '../fixtures/fake-k3s-api/helpers.js';
import { sharedGuest } from '../support/shared-guest.js';
import { recordingLogger, repoRoot } from '../support/test-guest.js';

const work = mkdtempSync(join(tmpdir(), 'k3s-vm-existing-'));
let api: FakeK3sApi;
let kubeconfigFile: string;
let core: CoreV1Api;

const startApi = useFakeApi();

beforeAll(async () => {
  api = (await startApi({ nodeName: 'shared', serviceAccountDelayMs: 200 })).api;
  // A kubeconfig as a developer has it: the test cluster next to one that must never be used.
  const kc = new KubeConfig();
  kc.loadFromString(api.kubeconfig);
  const cluster = kc.getCurrentCluster()!;
  const user = kc.getCurrentUser()!;
  kc.loadFromOptions({
    clusters: [
      { ...cluster, name: 'test' },
      { name: 'prod', server: 'https://prod.invalid:6443', skipTLSVerify: false },
    ],
    users: [
      { ...user, name: 'test' },
      { name: 'prod', token: 'secret' },
    ],
    contexts: [
      { name: 'ci-shared', cluster: 'test', user: 'test' },
      { name: 'prod-eks', cluster: 'prod', user: 'prod' },
    ],
    currentContext: 'prod-eks',
  });
  kubeconfigFile = join(work, 'kubeconfig');
  writeFileSync(kubeconfigFile, kc.exportConfig(), { mode: 0o600 });
  core = kc.makeApiClient(CoreV1Api);
  kc.setCurrentContext('ci-shared');
  core = kc.makeApiClient(CoreV1Api);
});

/** k3s-vm's namespaces that are not being deleted (teardown does not wait for finalizers). */
const managed = async () =>
  (await core.listNamespace({ labelSelector: 'app.kubernetes.io/managed-by=k3s-vm' })).items
    .filter((ns) => !ns.metadata?.deletionTimestamp)
    .map((ns) => ns.metadata!.name!);
const alive = async () =>
  (await core.listNamespace()).items.filter((ns) => !ns.metadata?.deletionTimestamp).map((ns) => ns.metadata!.name!);

function existing(extra: Record<string, string> = {}) {
  return { projectRoot: repoRoot, env: { K3S_VM_KUBECONFIG: kubeconfigFile, K3S_VM_ALLOW_CONTEXTS: 'ci-*', ...extra } };
}

describe('an existing cluster', () => {
  it('is refused unless its context is explicitly allowed, naming the context and how to allow it', async () => {
    const error = (await openCluster({ ...existing(), env: { K3S_VM_KUBECONFIG: kubeconfigFile } }).catch((e: unknown) => e)) as K3sVmError;
    expect(error.code).toBe('CONTEXT_NOT_ALLOWED');
    expect(error.message).toContain('context "prod-eks"');
    expect(error.hint).toMatch(/K3S_VM_ALLOW_CONTEXTS=prod-eks/);
    const notMatching = (await openCluster(existing({ K3S_VM_CONTEXT: 'ci-shared', K3S_VM_ALLOW_CONTEXTS: 'staging-*,ci' })).catch(
      (e: unknown) => e,
    )) as K3sVmError;
    expect(notMatching.code).toBe('CONTEXT_NOT_ALLOWED');
    expect(await managed()).toEqual([]);
  });

  it('matches allowed contexts with * as a wildcard', () => {
    expect(contextAllowed('ci-shared', ['ci-*'])).toBe(true);
    expect(contextAllowed('ci-shared', ['*'])).toBe(true);
    expect(contextAllowed('kind-ci', ['ci-*'])).toBe(false);
    expect(contextAllowed('ci.shared', ['ci?shared', 'ci-shared'])).toBe(false);
    expect(contextAllowed('arn:aws:eks:eu-west-1:1:cluster/ci', ['arn:aws:eks:*:cluster/ci'])).toBe(true);
  });

  it('refuses what only a VM has, saying why', async () => {
    const error = (await openCluster(existing({ K3S_VM_CONTEXT: 'ci-shared', K3S_VM_MEMORY: '8192', K3S_VM_ACCEL: 'kvm' })).catch(
      (e: unknown) => e,
    )) as K3sVmError;
    expect(error.code).toBe('CONFIG_INVALID');
    expect(error.message).toMatch(/^K3S_VM_MEMORY, K3S_VM_ACCEL configure the VM, but K3S_VM_KUBECONFIG asks for an existing cluster/);
    const start = (await startCluster(existing({ K3S_VM_CONTEXT: 'ci-shared' })).catch((e: unknown) => e)) as K3sVmError;
    expect(start.message).toMatch(/^there is no VM to start/);
  });

  it('waits with the named readiness steps, labels the run, and deletes its namespaces at the end', async () => {
    const logger = recordingLogger();
    const cluster = (await openCluster({ ...existing({ K3S_VM_CONTEXT: 'ci-shared' }), logger })) as ConnectedCluster;
    let stopped = false;
    try {
      expect(cluster.kind).toBe('existing');
      expect(cluster.context).toBe('ci-shared');
      expect(logger.lines.filter((l) => l.startsWith('ready: '))).toEqual([
        expect.stringMatching(/^ready: step 1 of 3 "kubeconfig present"/),
        expect.stringMatching(/^ready: step 2 of 3 "API \/readyz ok"/),
        expect.stringMatching(/^ready: step 3 of 3 "default ServiceAccount exists"/),
      ]);
      // The kubeconfig handed to tests holds this context alone, in a file only the user reads.
      const handed = new KubeConfig();
      handed.loadFromFile(cluster.kubeconfigPath);
      expect(handed.getContexts().map((c) => c.name)).toEqual(['ci-shared']);
      expect(handed.getCurrentCluster()?.server).toBe(api.url);
      expect(statSync(cluster.kubeconfigPath).mode & 0o777).toBe(0o600);
      const runNamespace = await core.readNamespace({ name: runNamespaceName(cluster.runId) });
      expect(runNamespace.metadata?.labels?.[runIdLabel]).toBe(cluster.runId);
      expect(Date.parse(runNamespace.metadata?.annotations?.['k3s-vm/heartbeat'] ?? '')).toBeGreaterThan(Date.now() - 60_000);
      await core.createNamespace({ body: { metadata: { name: 't-made-by-a-test', labels: runLabels(cluster.runId) } } });
      await cluster.stop();
      stopped = true;
      expect(await managed()).toEqual([]);
      expect(existsSync(cluster.kubeconfigPath)).toBe(false);
    } finally {
      if (!stopped) await cluster.stop();
    }
  });

  it('ends with a named step when the API server does not answer', async () => {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'gone', server: 'https://127.0.0.1:1', skipTLSVerify: true }],
      users: [{ name: 'gone', token: 'x' }],
      contexts: [{ name: 'ci-gone', cluster: 'gone', user: 'gone' }],
      currentContext: 'ci-gone',
    });
    const file = join(work, 'gone.kubeconfig');
    writeFileSync(file, kc.exportConfig(), { mode: 0o600 });
    const error = (await openCluster({
      projectRoot: repoRoot,
      timeoutSeconds: 2,
      env: { K3S_VM_KUBECONFIG: file, K3S_VM_ALLOW_CONTEXTS: 'ci-*' },
    }).catch((e: unknown) => e)) as K3sVmError;
    expect(error.code).toBe('NOT_READY');
    expect(error.message).toMatch(/^K3s not ready before the deadline \(step 2 of 3 "API \/readyz ok", waited \d+ s\); last error: /);
    expect(error.hint).toContain('https://127.0.0.1:1');
  });

  it('sweeps the namespaces of dead runs, and never a live run’s or an unlabelled one', async () => {
    const now = Date.now();
    const hourAgo = now - 3600_000;
    const create = (name: string, labels: Record<string, string>, annotations: Record<string, string> = {}) =>
      core.createNamespace({ body: { metadata: { name, labels, annotations } } });
    // A run killed an hour ago: its heartbeat stopped then.
    await create(runNamespaceName('rdead-1'), runLabels('rdead-1', hourAgo), { 'k3s-vm/heartbeat': new Date(hourAgo).toISOString() });
    await create('t-dead-test', runLabels('rdead-1', hourAgo));
    // A run that never got to its heartbeat namespace: judged by when its namespaces were made.
    await create('t-orphan', runLabels('rorphan-1', hourAgo));
    // A live run that started an hour ago and still beats.
    await create(runNamespaceName('rlive-1'), runLabels('rlive-1', hourAgo), { 'k3s-vm/heartbeat': new Date(now - 5000).toISOString() });
    await create('t-live-test', runLabels('rlive-1', hourAgo));
    // Not k3s-vm's, or k3s-vm's without a run id: never touched.
    await create('team-app', { app: 'x' });
    await create('t-old-style', { 'app.kubernetes.io/managed-by': 'k3s-vm' });
    const deleted = await sweepDeadRuns(core, { ownRunId: 'rmine-1', sweepAfterSeconds: 600, logger: recordingLogger(), now });
    expect(deleted.sort()).toEqual([runNamespaceName('rdead-1'), 't-dead-test', 't-orphan'].sort());
    const left = await alive();
    expect(left).toEqual(expect.arrayContaining([runNamespaceName('rlive-1'), 't-live-test', 'team-app', 't-old-style']));
    expect(left).not.toEqual(expect.arrayContaining(['t-dead-test']));
    for (const name of [runNamespaceName('rlive-1'), 't-live-test', 'team-app', 't-old-style']) await core.deleteNamespace({ name });
  });

  it('leaves a namespace whose created label is not a time alone, with a warning, and goes on', async () => {
    const now = Date.now();
    const hourAgo = now - 3600_000;
    const create = (name: string, labels: Record<string, string>) => core.createNamespace({ body: { metadata: { name, labels } } });
    await create('t-garbled', { ...runLabels('rgarbled-1', hourAgo), 'k3s-vm/created': 'yesterday' });
    await create('t-garbled-dead', runLabels('rgarbled-1', hourAgo));
    await create('t-unlabelled-time', { 'app.kubernetes.io/managed-by': 'k3s-vm', 'k3s-vm/run-id': 'rnotime-1' });
    const logger = recordingLogger();
    const deleted = await sweepDeadRuns(core, { ownRunId: 'rmine-1', sweepAfterSeconds: 600, logger, now });
    expect(deleted).toEqual(['t-garbled-dead']);
    expect(logger.lines).toEqual(
      expect.arrayContaining([
        'warning: namespace t-garbled of run rgarbled-1 is left alone: its k3s-vm/created label is "yesterday", not seconds since the epoch; delete it yourself if it is not in use',
        'warning: namespace t-unlabelled-time of run rnotime-1 is left alone: its k3s-vm/created label is missing; delete it yourself if it is not in use',
        expect.stringMatching(/^deleted 1 namespace\(s\) of run rgarbled-1, silent since /),
      ]),
    );
    const left = await alive();
    expect(left).toEqual(expect.arrayContaining(['t-garbled', 't-unlabelled-time']));
    for (const name of ['t-garbled', 't-unlabelled-time']) await core.deleteNamespace({ name });
  });

  it('serves the CLI: status and kubectl use the allowed context, the VM commands say there is no VM', async () => {
    // kubectl keeps a discovery cache under HOME: a home of the test's own.
    const io = memoryIo({
      PATH: process.env['PATH'],
      HOME: work,
      K3S_VM_KUBECONFIG: kubeconfigFile,
      K3S_VM_CONTEXT: 'ci-shared',
      K3S_VM_ALLOW_CONTEXTS: 'ci-shared',
      NO_COLOR: '1',
    });
    expect(await run(['status'], io)).toBe(0);
    expect(io.out()).toMatch(/^ci-shared: running\n {2}cluster: {4}existing, context ci-shared\n {2}API: {8}https:\/\/127\.0\.0\.1:\d+\n/);
    io.clear();
    expect(await run(['kubectl', 'get', 'nodes', '-o', 'name'], io)).toBe(0);
    expect(io.out()).toBe('node/shared\n');
    expect(await run(['ssh', '--', 'true'], io)).toBe(3);
    expect(io.err()).toMatch(/there is no VM: K3S_VM_KUBECONFIG names an existing cluster/);
  });

  it('hands kubectl a kubeconfig of the allowed context alone, written 0600 by k3s-vm, and never the user’s file', async () => {
    // kubectl as the user has it, behind a wrapper that records which file it was given.
    const bin = mkdtempSync(join(work, 'bin-'));
    const seen = join(bin, 'seen');
    writeFileSync(
      join(bin, 'kubectl'),
      `#!/bin/sh\nprintf '%s %s\\n' "$KUBECONFIG" "$(stat -c %a "$KUBECONFIG")" >> '${seen}'\nexec /usr/bin/kubectl "$@"\n`,
      { mode: 0o755 },
    );
    const io = memoryIo({
      PATH: `${bin}:${process.env['PATH']}`,
      HOME: work,
      K3S_VM_KUBECONFIG: kubeconfigFile,
      K3S_VM_CONTEXT: 'ci-shared',
      K3S_VM_ALLOW_CONTEXTS: 'ci-shared',
    });
    const before = readFileSync(kubeconfigFile, 'utf8');
    // Before the verb, --context is k3s-vm's own flag, refused by the allow-list; after it, kubectl's, which finds no such context.
    expect(await run(['kubectl', '--context=prod-eks', 'get', 'namespaces'], io)).toBe(1);
    expect(io.err()).toMatch(/will not run tests against context "prod-eks"/);
    expect(await run(['kubectl', 'get', 'namespaces', '--context=prod-eks'], io)).not.toBe(0);
    expect(io.err()).toMatch(/context was not found for specified context: prod-eks|context "prod-eks" does not exist/);
    io.clear();
    expect(await run(['kubectl', 'config', 'view', '--raw', '-o', 'json'], io)).toBe(0);
    const shown = JSON.parse(io.out()) as { contexts: Array<{ name: string }>; users: Array<{ name: string }> };
    expect(shown.contexts.map((c) => c.name)).toEqual(['ci-shared']);
    expect(io.out()).not.toContain('secret');
    expect(io.out()).not.toContain('prod');
    expect(await run(['kubectl', 'config', 'use-context', 'prod-eks'], io)).not.toBe(0);
    expect(await run(['kubectl', 'config', 'set-context', 'ci-shared', '--namespace=elsewhere'], io)).toBe(0);
    expect(readFileSync(kubeconfigFile, 'utf8')).toBe(before);
    const given = readFileSync(seen, 'utf8').trim().split('\n');
    expect(given).toHaveLength(4); // the refused run never started kubectl
    for (const line of given) {
      const [path, mode] = line.split(' ');
      expect(path).not.toBe(kubeconfigFile);
      expect(mode).toBe('600');
      // Removed once kubectl is done.
      expect(existsSync(path!)).toBe(false);
    }
  });

  it('runs three suites at once on one cluster, each with its own namespaces, and leaves nothing behind', async () => {
    const project = join(repoRoot, 'fixtures', 'consumer-existing');
    linkPackage(project);
    const env = {
      PATH: process.env['PATH'] ?? '',
      HOME: process.env['HOME'] ?? '',
      K3S_VM_KUBECONFIG: kubeconfigFile,
      K3S_VM_CONTEXT: 'ci-shared',
      K3S_VM_ALLOW_CONTEXTS: 'ci-shared',
      NO_COLOR: '1',
    };
    const runs = await Promise.all([1, 2, 3].map(() => runIn(project, 'vitest', ['run'], env)));
    for (const result of runs) expect(result.exitCode, result.all).toBe(0);
    const runIds = new Set(runs.map((result) => /run (r[0-9a-z]+-[0-9a-f]{8})/.exec(String(result.all))?.[1]));
    expect(runIds.size).toBe(3);
    expect(await managed()).toEqual([]);
  });
});

describe('an existing cluster whose user has a token', () => {
  const token = 'k3s-vm-test-token';
  let proxy: Server;
  let ca: string;

  // An authenticating front for the fake API (a test double of an API server's token check):
  // 401 for an unknown token, 403 for one without rights, else the request passed on.
  beforeAll(async () => {
    const tls = join(work, 'proxy-tls');
    const certs = spawnSync('/bin/sh', [join(repoRoot, 'fixtures', 'test-guest', 'fake-k3s-api', 'gen-certs.sh'), tls], {
      encoding: 'utf8',
    });
    if (certs.status !== 0) throw new Error(`gen-certs.sh failed: ${certs.stderr}`);
    ca = readFileSync(join(tls, 'ca.crt'), 'utf8');
    const upstream = new KubeConfig();
    upstream.loadFromString(api.kubeconfig);
    const material = (data: string | undefined) => Buffer.from(data ?? '', 'base64');
    const user = upstream.getCurrentUser()!;
    proxy = createServer({ cert: readFileSync(join(tls, 'server.crt')), key: readFileSync(join(tls, 'server.key')) }, (req, res) => {
      const given = req.headers.authorization;
      if (given !== `Bearer ${token}`) {
        const code = given === 'Bearer no-rights' ? 403 : 401;
        const reason = code === 403 ? 'Forbidden' : 'Unauthorized';
        res.writeHead(code, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', message: reason, reason, code }));
        return;
      }
      const headers = { ...req.headers };
      delete headers.authorization;
      delete headers.host;
      const onward = httpsRequest(
        {
          host: '127.0.0.1',
          port: api.port,
          path: req.url,
          method: req.method,
          headers,
          servername: 'localhost',
          ca: material(upstream.getCurrentCluster()!.caData),
          cert: material(user.certData),
          key: material(user.keyData),
        },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        },
      );
      onward.once('error', () => res.destroy());
      req.pipe(onward);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  });
  afterAll(() => new Promise<void>((resolve) => proxy.close(() => resolve())));

  const kubeconfigWith = (name: string, user: Record<string, unknown>) => {
    const file = join(work, `${name}.kubeconfig`);
    const { port } = proxy.address() as AddressInfo;
    const config = {
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [
        { name, cluster: { server: `https://127.0.0.1:${port}`, 'certificate-authority-data': Buffer.from(ca).toString('base64') } },
      ],
      users: [{ name, user }],
      contexts: [{ name: `ci-${name}`, context: { cluster: name, user: name } }],
      'current-context': `ci-${name}`,
    };
    writeFileSync(file, JSON.stringify(config), { mode: 0o600 });
    return file;
  };

  it('is reached with a tokenFile (relative to the kubeconfig, ending in a newline, as files do)', async () => {
    const tokenFile = join(work, 'token');
    writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
    // Relative to the kubeconfig's folder, as kubectl reads it.
    const file = kubeconfigWith('tokenfile', { tokenFile: 'token' });
    const cluster = (await openCluster({
      projectRoot: repoRoot,
      timeoutSeconds: 20,
      env: { K3S_VM_KUBECONFIG: file, K3S_VM_ALLOW_CONTEXTS: 'ci-*' },
    })) as ConnectedCluster;
    await cluster.stop();
    expect(cluster.context).toBe('ci-tokenfile');
  });

  it.each([
    ['refused (401)', 'wrong', 401],
    ['without rights (403)', 'no-rights', 403],
  ])('fails at once when the token is %s, with the status and the context', async (_label, given, code) => {
    const file = kubeconfigWith(`token-${code}`, { token: given });
    const started = Date.now();
    const error = (await openCluster({
      projectRoot: repoRoot,
      timeoutSeconds: 60,
      env: { K3S_VM_KUBECONFIG: file, K3S_VM_ALLOW_CONTEXTS: 'ci-*' },
    }).catch((e: unknown) => e)) as K3sVmError;
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(error).toBeInstanceOf(K3sVmError);
    expect(error.code).toBe('NOT_READY');
    expect(error.message).toContain(`HTTP ${code}`);
    expect(error.message).toContain(`context "ci-token-${code}"`);
    expect(error.hint).toMatch(/credentials/);
  });
});

describe('a test guest handed over as an existing cluster', () => {
  it('is used through its kubeconfig, with no VM state of its own', async () => {
    const guest = sharedGuest().provided;
    const context = new KubeConfig();
    context.loadFromString(guest.kubeconfig);
    const dir = join(work, 'never-created');
    const cluster = (await openCluster({
      projectRoot: repoRoot,
      dir,
      env: { K3S_VM_KUBECONFIG: guest.kubeconfigPath, K3S_VM_ALLOW_CONTEXTS: context.getCurrentContext() },
    })) as ConnectedCluster;
    try {
      expect(cluster.kind).toBe('existing');
      expect(cluster.apiServerUrl).toBe(guest.apiServerUrl);
      const nodes = await cluster.kubeConfig().makeApiClient(CoreV1Api).listNode();
      expect(nodes.items.map((node) => node.metadata?.name)).toEqual([guest.name]);
    } finally {
      await cluster.stop();
    }
    expect(existsSync(dir)).toBe(false);
    expect(readFileSync(guest.kubeconfigPath, 'utf8')).toBe(guest.kubeconfig);
  });
});
