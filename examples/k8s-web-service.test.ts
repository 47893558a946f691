// Example: a web server behind a Service, reached the way a test would reach it — wait until it
// is ready, exec into it, read its log, port-forward to the Service. A failing test here would
// carry its namespace's events, pod states and log tails in its report.
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { AppsV1Api, CoreV1Api } from '@kubernetes/client-node';
import { importImages } from 'k3s-vm';
import { beforeAll, expect } from 'vitest';
import { deploymentAvailable, test, useK3sVm } from 'k3s-vm/vitest';
import { writeImageArchive } from '../test/support/image-archive.js';

const cluster = useK3sVm();
const image = cluster.kind === 'vm' ? 'k3s-vm.example/web:1' : 'busybox:stable';

beforeAll(async () => {
  if (cluster.kind !== 'vm') return;
  // A static busybox as the image (no Docker, no registry), imported into the VM.
  const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((path) => existsSync(path));
  if (!busybox) throw new Error('this example builds its image from a static busybox: install it (apt-get install busybox-static)');
  const archive = writeImageArchive(join(mkdtempSync(join(tmpdir(), 'web-image-')), 'web.tar.gz'), {
    name: image,
    gzip: true,
    executables: { '/bin/busybox': readFileSync(busybox) },
    links: { '/bin/sh': 'busybox', '/bin/httpd': 'busybox', '/bin/cat': 'busybox', '/bin/mkdir': 'busybox' },
    cmd: ['/bin/sh'],
  });
  await importImages([archive], { dir: dirname(cluster.kubeconfigPath) });
});

test('serves its page through a Service', async ({ kubeConfig, namespace, waitFor, exec, logs, portForward }) => {
  await kubeConfig.makeApiClient(AppsV1Api).createNamespacedDeployment({
    namespace,
    body: {
      metadata: { name: 'web' },
      spec: {
        replicas: 1,
        selector: { matchLabels: { app: 'web' } },
        template: {
          metadata: { labels: { app: 'web' } },
          spec: {
            containers: [
              {
                name: 'httpd',
                image,
                imagePullPolicy: cluster.kind === 'vm' ? 'Never' : 'IfNotPresent',
                command: [
                  'sh',
                  '-c',
                  'mkdir -p /www && echo "hello" > /www/index.html && echo serving && exec httpd -f -v -p 8080 -h /www',
                ],
                ports: [{ name: 'http', containerPort: 8080 }],
                readinessProbe: { tcpSocket: { port: 'http' }, periodSeconds: 1 },
              },
            ],
          },
        },
      },
    },
  });
  await kubeConfig.makeApiClient(CoreV1Api).createNamespacedService({
    namespace,
    body: { metadata: { name: 'web' }, spec: { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }] } },
  });

  // Watched, not polled; on timeout the error says what the Deployment and its events showed.
  await waitFor({ kind: 'Deployment', name: 'web' }, deploymentAvailable, { timeoutMs: 120_000 });
  const [pod] = (await kubeConfig.makeApiClient(CoreV1Api).listNamespacedPod({ namespace, labelSelector: 'app=web' })).items;

  // argv as given, no shell; the command's own exit code.
  const { stdout, exitCode } = await exec(pod!.metadata!.name!, ['cat', '/www/index.html']);
  expect({ stdout, exitCode }).toEqual({ stdout: 'hello\n', exitCode: 0 });

  // A port-forward to the Service's named target port on a ready pod; closed at the test's end.
  const web = await portForward({ kind: 'Service', name: 'web' }, 80);
  for (let i = 0; i < 3; i++) expect(await (await web.fetch('/')).text()).toBe('hello\n');

  expect(await logs(pod!.metadata!.name!, { tailLines: 10 })).toContain('serving');
});
