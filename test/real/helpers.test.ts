// The test helpers on the real-Kubernetes test guest: waits by list-then-watch on a real kubelet's
// pods, a real Deployment rollout and a real failing Job; exec, logs and port-forward through the
// real API server and kubelet; a namespace's diagnostics (test/real/diagnostics.test.ts: in a
// consumer project's report).
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppsV1Api, BatchV1Api, CoreV1Api, type V1Pod } from '@kubernetes/client-node';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  collectDiagnostics,
  deleted,
  deploymentAvailable,
  execInPod,
  importImages,
  jobComplete,
  jobFailed,
  podLogs,
  podReady,
  podRunning,
  podSucceeded,
  portForward,
  waitFor,
} from '../../src/cluster/index.js';
import { K3sVmError } from '../../src/errors.js';
import { writeImageArchive } from '../support/image-archive.js';
import { describeReal, realGuest, realKubeConfig } from '../support/real-cluster.js';
import { recordingLogger } from '../support/test-guest.js';

const image = 'k3s-vm.test/helpers:1';
const failure = async (promise: Promise<unknown>) =>
  (await promise.then(
    () => undefined,
    (e: unknown) => e,
  )) as K3sVmError;

describeReal('the test helpers on real Kubernetes', () => {
  const namespace = `helpers-${Date.now().toString(36)}`;
  const kc = () => realKubeConfig();
  const core = () => kc().makeApiClient(CoreV1Api);
  const busyboxPod = (name: string, command: string[], extra: Partial<NonNullable<V1Pod['spec']>> = {}): V1Pod => ({
    metadata: { name, labels: { app: name } },
    spec: {
      terminationGracePeriodSeconds: 0,
      containers: [{ name: 'main', image, imagePullPolicy: 'Never', command }],
      ...extra,
    },
  });
  const httpd: V1Pod = {
    metadata: { name: 'web', labels: { app: 'web' } },
    spec: {
      terminationGracePeriodSeconds: 0,
      containers: [
        {
          name: 'httpd',
          image,
          imagePullPolicy: 'Never',
          command: [
            '/bin/sh',
            '-c',
            'mkdir -p /www && echo "hello from $HOSTNAME" > /www/index.html && exec /bin/httpd -f -p 8080 -h /www',
          ],
          ports: [{ name: 'http', containerPort: 8080 }],
          readinessProbe: { tcpSocket: { port: 8080 as never }, periodSeconds: 1 },
        },
      ],
    },
  };

  beforeAll(async () => {
    const work = mkdtempSync(join(tmpdir(), 'k3s-vm-real-helpers-'));
    const archive = writeImageArchive(join(work, 'helpers.tar.gz'), {
      name: image,
      gzip: true,
      executables: { '/bin/busybox': readFileSync('/bin/busybox') },
      links: {
        '/bin/sh': 'busybox',
        '/bin/httpd': 'busybox',
        '/bin/cat': 'busybox',
        '/bin/echo': 'busybox',
        '/bin/sleep': 'busybox',
        '/bin/mkdir': 'busybox',
      },
      cmd: ['/bin/sh'],
    });
    await importImages([archive], { dir: realGuest()!.options.dir });
    await core().createNamespace({ body: { metadata: { name: namespace } } });
    await waitFor(kc(), { kind: 'ServiceAccount', name: 'default', namespace }, (sa) => sa !== undefined, { timeoutMs: 60_000 });
    await core().createNamespacedPod({ namespace, body: httpd });
    await core().createNamespacedService({
      namespace,
      body: {
        metadata: { name: 'web' },
        spec: { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http' as never }] },
      },
    });
    await core().createNamespacedPod({ namespace, body: busyboxPod('shell', ['/bin/sleep', '3600']) });
  });

  afterAll(async () => {
    await core()
      .deleteNamespace({ name: namespace })
      .catch(() => undefined);
  });

  it('waits for real pods to be Ready by list-then-watch, and returns the pod as it was then', async () => {
    const logger = recordingLogger();
    const started = Date.now();
    const pod = (await waitFor(kc(), { kind: 'Pod', name: 'web', namespace }, podReady, { timeoutMs: 180_000, logger })) as V1Pod;
    expect(pod.status?.conditions?.find((c) => c.type === 'Ready')?.status).toBe('True');
    // One list, then watches: not a poll.
    expect(logger.lines.filter((line) => line.includes('listed'))).toHaveLength(1);
    await waitFor(kc(), { kind: 'Pod', name: 'shell', namespace }, podRunning, { timeoutMs: 180_000 });
    process.stderr.write(`helpers: pods ready in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  });

  it('resumes a watch the server ends, from the version it last saw', async () => {
    const logger = recordingLogger();
    const name = 'resumed';
    await core().createNamespacedConfigMap({ namespace, body: { metadata: { name }, data: { step: '0' } } });
    const waiting = waitFor(
      kc(),
      { kind: 'ConfigMap', name, namespace },
      (cm) => (cm?.['data'] as { step?: string } | undefined)?.step === '2',
      {
        timeoutMs: 60_000,
        watchSeconds: 1,
        logger,
      },
    );
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    await core().patchNamespacedConfigMap({ name, namespace, body: [{ op: 'replace', path: '/data/step', value: '2' }] });
    await waiting;
    expect(logger.lines.some((line) => /watch ended; resuming from resourceVersion \d+/.test(line))).toBe(true);
    expect(logger.lines.filter((line) => line.includes('listed'))).toHaveLength(1);
  });

  it('times out naming the pod, its phase, its containers and its last events', async () => {
    await core().createNamespacedPod({
      namespace,
      body: {
        // Labelled, so that a Service below selects it and has no ready endpoints.
        metadata: { name: 'no-image', labels: { app: 'no-image' } },
        spec: { containers: [{ name: 'app', image: 'k3s-vm.test/absent:1', imagePullPolicy: 'Never' }] },
      },
    });
    await waitFor(kc(), { kind: 'Pod', name: 'no-image', namespace }, (pod) => JSON.stringify(pod ?? {}).includes('ErrImageNeverPull'), {
      timeoutMs: 120_000,
    });
    const error = await failure(waitFor(kc(), { kind: 'Pod', name: 'no-image', namespace }, podRunning, { timeoutMs: 2_000 }));
    expect(error.code).toBe('WAIT_TIMEOUT');
    expect(error.message).toMatch(new RegExp(`^Pod ${namespace}/no-image is not Running after 2\\.\\d s; last seen: phase Pending`));
    expect(error.message).toMatch(/containers app waiting \(ErrImageNeverPull/);
    // Oldest first: the scheduler's Normal event can come before the kubelet's warning.
    expect(error.message).toMatch(/its last events:(\n {2}.*)*\n {2}\S+ Warning ErrImageNeverPull: /);
  });

  it('says what the namespace has when the object never appeared', async () => {
    const error = await failure(waitFor(kc(), { kind: 'Pod', name: 'nobody', namespace }, podRunning, { timeoutMs: 1_000 }));
    expect(error.message).toMatch(
      /Pod .*\/nobody is not Running after 1\.\d s; last seen: it does not exist: the namespace .* has the pods .*web/,
    );
  });

  it('ends at once when the signal aborts', async () => {
    const controller = new AbortController();
    const waiting = failure(waitFor(kc(), { kind: 'Pod', name: 'web', namespace }, podSucceeded, { signal: controller.signal }));
    await new Promise((resolve) => setTimeout(resolve, 500));
    const aborted = Date.now();
    controller.abort(new Error('the test timed out'));
    const error = await waiting;
    expect(Date.now() - aborted).toBeLessThan(200);
    expect(error.code).toBe('ABORTED');
    expect(error.message).toMatch(/waiting for Pod .*\/web to be Succeeded was aborted after .* s; last seen: phase Running/);
  });

  it('runs a command in the pod through the kubelet: its own output and exit code, argv as given', async () => {
    const pod = { name: 'shell', namespace };
    const result = await execInPod(kc(), pod, ['/bin/sh', '-c', 'echo out; echo err >&2; exit 3']);
    expect(result).toEqual({ stdout: 'out\n', stderr: 'err\n', exitCode: 3 });
    // No shell in between: the words reach echo as they are.
    expect((await execInPod(kc(), pod, ['/bin/echo', 'a  b', '$HOME', '*'])).stdout).toBe('a  b $HOME *\n');
    expect(await execInPod(kc(), pod, ['/bin/cat'], { stdin: 'fed through stdin' })).toEqual({
      stdout: 'fed through stdin',
      stderr: '',
      exitCode: 0,
    });
  });

  it('refuses exec into a container the pod lacks, a pod that does not exist, and a command that is not there', async () => {
    const noContainer = await failure(execInPod(kc(), { name: 'shell', namespace }, ['/bin/true'], { container: 'sidecar' }));
    expect(noContainer.message).toBe(`Pod ${namespace}/shell has no container sidecar; it has the container main`);
    const noPod = await failure(execInPod(kc(), { name: 'shel', namespace }, ['/bin/true']));
    expect(noPod.code).toBe('OBJECT_NOT_FOUND');
    expect(noPod.message).toMatch(new RegExp(`^Pod ${namespace}/shel does not exist; the namespace has the pods .*shell`));
    const noCommand = await failure(execInPod(kc(), { name: 'shell', namespace }, ['/bin/nothing-here']));
    expect(noCommand.code).toBe('EXEC_FAILED');
    expect(noCommand.message).toMatch(/\["\/bin\/nothing-here"\] did not run in container main of Pod .*: .*(no such file|not found)/);
  });

  it("reads a container's log, its last lines, and refuses a container the pod lacks", async () => {
    await core().createNamespacedPod({
      namespace,
      body: busyboxPod('counter', ['/bin/sh', '-c', 'for i in 1 2 3 4 5; do echo line $i; done'], { restartPolicy: 'Never' }),
    });
    await waitFor(kc(), { kind: 'Pod', name: 'counter', namespace }, podSucceeded, { timeoutMs: 120_000 });
    const pod = { name: 'counter', namespace };
    expect(await podLogs(kc(), pod)).toBe('line 1\nline 2\nline 3\nline 4\nline 5\n');
    expect(await podLogs(kc(), pod, { tailLines: 2 })).toBe('line 4\nline 5\n');
    expect(await podLogs(kc(), pod, { container: 'main', sinceSeconds: 3600 })).toMatch(/line 5/);
    const error = await failure(podLogs(kc(), pod, { container: 'app' }));
    expect(error.message).toBe(`Pod ${namespace}/counter has no container app; it has the container main`);
  });

  it('forwards to a pod and to its Service (named target port): many requests over one forward', async () => {
    const toPod = await portForward(kc(), { kind: 'Pod', name: 'web', namespace }, 8080);
    const toService = await portForward(kc(), { kind: 'Service', name: 'web', namespace }, 80);
    try {
      expect(toPod.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(toService.pod).toEqual({ name: 'web', namespace });
      expect(toService.remotePort).toBe(8080);
      const bodies = await Promise.all(
        Array.from({ length: 10 }, async (_, i) => {
          const forward = i % 2 ? toService : toPod;
          const response = await fetch(`${forward.url}/index.html`);
          return `${response.status} ${(await response.text()).trim()}`;
        }),
      );
      expect(new Set(bodies)).toEqual(new Set(['200 hello from web']));
      expect((await toService.fetch('/')).status).toBe(200);
    } finally {
      await toPod.close();
      await toService.close();
    }
  });

  it('refuses a port the Service does not expose, and a Service without ready endpoints, naming what they have', async () => {
    const port = await failure(portForward(kc(), { kind: 'Service', name: 'web', namespace }, 8080));
    expect(port.message).toBe(`Service ${namespace}/web does not expose port 8080; it exposes 80 (http → http)`);
    await core().createNamespacedService({
      namespace,
      body: { metadata: { name: 'empty' }, spec: { selector: { app: 'no-image' }, ports: [{ port: 80 }] } },
    });
    const empty = await failure(portForward(kc(), { kind: 'Service', name: 'empty', namespace }, 80));
    expect(empty.message).toMatch(
      new RegExp(`^Service ${namespace}/empty has no ready endpoints: its selector app=no-image matches no-image \\(phase Pending`),
    );
    const missing = await failure(portForward(kc(), { kind: 'Service', name: 'wbe', namespace }, 80));
    expect(missing.message).toMatch(/^Service .*\/wbe does not exist; the namespace has the services .*web/);
  });

  it('fails clearly, not by hanging, when the pod behind a forward dies', async () => {
    await core().createNamespacedPod({ namespace, body: { ...httpd, metadata: { name: 'short-lived', labels: { app: 'short' } } } });
    await waitFor(kc(), { kind: 'Pod', name: 'short-lived', namespace }, podReady, { timeoutMs: 120_000 });
    const forward = await portForward(kc(), { kind: 'Pod', name: 'short-lived', namespace }, 'http');
    try {
      expect((await forward.fetch('/')).status).toBe(200);
      await core().deleteNamespacedPod({ name: 'short-lived', namespace, gracePeriodSeconds: 0 });
      await waitFor(kc(), { kind: 'Pod', name: 'short-lived', namespace }, deleted, { timeoutMs: 60_000 });
      const started = Date.now();
      const error = await failure(forward.fetch('/', { signal: AbortSignal.timeout(20_000) }));
      expect(error.code).toBe('PORT_FORWARD_FAILED');
      expect(error.message).toMatch(/the port-forward to port 8080 of Pod .*\/short-lived lost its Pod: it no longer exists/);
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      await forward.close();
    }
  });

  it('waits for a real Deployment to roll out, as kubectl rollout status judges', async () => {
    const apps = kc().makeApiClient(AppsV1Api);
    await apps.createNamespacedDeployment({
      namespace,
      body: {
        metadata: { name: 'fleet' },
        spec: {
          replicas: 2,
          selector: { matchLabels: { app: 'fleet' } },
          template: { metadata: { labels: { app: 'fleet' } }, spec: busyboxPod('fleet', ['/bin/sleep', '3600']).spec! },
        },
      },
    });
    const rolled = (await waitFor(kc(), { kind: 'Deployment', name: 'fleet', namespace }, deploymentAvailable, { timeoutMs: 180_000 })) as {
      status?: { availableReplicas?: number; updatedReplicas?: number };
    };
    expect(rolled.status).toMatchObject({ availableReplicas: 2, updatedReplicas: 2 });
  });

  it('ends the wait for a Job to complete at once when the real Job fails, saying why', async () => {
    await kc()
      .makeApiClient(BatchV1Api)
      .createNamespacedJob({
        namespace,
        body: {
          metadata: { name: 'doomed' },
          spec: {
            backoffLimit: 0,
            template: { spec: { ...busyboxPod('doomed', ['/bin/sh', '-c', 'echo giving up; exit 1']).spec!, restartPolicy: 'Never' } },
          },
        },
      });
    const target = { kind: 'Job', name: 'doomed', namespace };
    const error = await failure(waitFor(kc(), target, jobComplete, { timeoutMs: 180_000 }));
    expect(error.code).toBe('WAIT_FAILED');
    expect(error.message).toMatch(new RegExp(`^Job ${namespace}/doomed will not be Complete: the Job Failed \\(BackoffLimitExceeded`));
    expect(await waitFor(kc(), target, jobFailed, { timeoutMs: 10_000 })).toBeDefined();
  });

  it("collects the namespace's diagnostics within 2 s: pods, events, and the logs' last lines", async () => {
    // The default budget bounds the collection: what a busy cluster does not answer in time is
    // named as such, never waited for.
    const bounded = await collectDiagnostics(kc(), namespace);
    process.stderr.write(`helpers: diagnostics of ${namespace} collected in ${bounded.elapsedMs} ms (${bounded.summary})\n`);
    expect(bounded.elapsedMs).toBeLessThan(2_000);
    expect(bounded.text).toMatch(/^k3s-vm diagnostics of namespace /);
    for (const line of bounded.text.split('\n').filter((l) => l.includes('not read within')))
      expect(line).toMatch(/not read within 1500 ms/);
    // What it holds, given the time to read all of it (the content, not the speed, is checked here).
    const diagnostics = await collectDiagnostics(kc(), namespace, { budgetMs: 30_000 });
    expect(diagnostics.text).toMatch(/^ {2}web: phase Running; conditions .*Ready=True/m);
    expect(diagnostics.text).toMatch(/^ {2}no-image: phase Pending; .*ErrImageNeverPull/m);
    expect(diagnostics.text).toMatch(/Warning ErrImageNeverPull Pod\/no-image/);
    expect(diagnostics.text).toMatch(/ {2}counter\/main:\n {4}line 1\n/);
    expect(diagnostics.text).not.toMatch(/not read within/);
  });
});
