// A failed test's diagnostics on the real-Kubernetes test guest, as a consumer sees them: a Vitest
// project and a Jest project (fixtures/consumer-*/diagnostics) run against the guest as an
// existing cluster, each with one failing test whose pod printed something.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import { beforeAll, expect, it } from 'vitest';
import { importImages } from '../../src/cluster/index.js';
import { consumerJestProject, consumerVitestProject, envWithoutK3sVm, linkPackage, runIn } from '../support/consumer.js';
import { writeImageArchive } from '../support/image-archive.js';
import { describeReal, realGuest, realKubeConfig } from '../support/real-cluster.js';
import { repoRoot } from '../support/test-guest.js';

const image = 'k3s-vm.test/diagnostics:1';

beforeAll(async () => {
  if (!realGuest()) return;
  const archive = writeImageArchive(join(mkdtempSync(join(tmpdir(), 'k3s-vm-real-diagnostics-')), 'diagnostics.tar'), {
    name: image,
    executables: { '/bin/busybox': readFileSync('/bin/busybox') },
    links: { '/bin/sh': 'busybox', '/bin/echo': 'busybox', '/bin/sleep': 'busybox' },
    cmd: ['/bin/sh'],
  });
  await importImages([archive], { dir: realGuest()!.options.dir });
});

describeReal('diagnostics of a failed test in a Vitest project', () => {
  const project = consumerVitestProject;
  beforeAll(() => linkPackage(project));
  const run = (extra: Record<string, string> = {}) =>
    runIn(project, 'vitest', ['run', '--config', 'vitest.diagnostics.config.ts'], {
      ...envWithoutK3sVm(),
      PATH: `${join(repoRoot, 'node_modules', '.bin')}:${process.env['PATH'] ?? ''}`,
      K3S_VM_KUBECONFIG: realGuest()!.provided.kubeconfigPath,
      K3S_VM_ALLOW_CONTEXTS: '*',
      DIAGNOSTICS_IMAGE: image,
      NO_COLOR: '1',
      ...extra,
    });

  it("prints the failed test's events, pod states and log tails with its failure, and nothing for the passing tests", async () => {
    const result = await run();
    expect(result.exitCode, result.all).toBe(1);
    expect(result.all).toMatch(/Tests\s+1 failed \| 3 passed \(4\)/);
    const reports = result.all.match(/k3s-vm diagnostics of namespace (t-a-failing-test-[a-z0-9-]+) \(collected in (\d+\.\d+) s\)/g) ?? [];
    expect(reports, result.all).toHaveLength(1);
    const seconds = Number(/collected in (\d+\.\d+) s/.exec(reports[0]!)![1]);
    process.stderr.write(`helpers: a failed test's diagnostics collected in ${seconds} s\n`);
    expect(seconds).toBeLessThan(2);
    expect(result.all).toMatch(/AssertionError: expected 'degraded' to be 'healthy'/);
    expect(result.all).toMatch(/Pods \(1\):\n {2}talker: phase Running/);
    expect(result.all).toMatch(/Normal Started Pod\/talker: /);
    expect(result.all).toMatch(/ {2}talker\/app:\n {4}boom from the inner test/);
  });

  it('collects nothing when turned off, and keeps the namespace when asked, printing its name', async () => {
    const result = await run({ K3S_VM_DIAGNOSTICS: '0', K3S_VM_KEEP_FAILED_NAMESPACES: '1' });
    expect(result.exitCode, result.all).toBe(1);
    expect(result.all).not.toMatch(/k3s-vm diagnostics of namespace/);
    const kept = /k3s-vm kept the failed test's namespace (t-a-failing-test-[a-z0-9-]+)/.exec(result.all)?.[1];
    expect(kept, result.all).toBeDefined();
    const namespace = await realKubeConfig().makeApiClient(CoreV1Api).readNamespace({ name: kept! });
    expect(namespace.status?.phase).toBe('Active');
    await realKubeConfig().makeApiClient(CoreV1Api).deleteNamespace({ name: kept! });
  });
});

describeReal('diagnostics of a failed test in a Jest project', () => {
  const project = consumerJestProject;
  beforeAll(() => linkPackage(project));

  it('prints them with the failure under k3s-vm/jest/environment, and nothing for the passing test', async () => {
    const result = await runIn(project, 'jest', ['--config', 'jest.diagnostics.config.js', '--runInBand'], {
      ...envWithoutK3sVm(),
      PATH: `${join(repoRoot, 'node_modules', '.bin')}:${process.env['PATH'] ?? ''}`,
      NODE_OPTIONS: '--experimental-vm-modules --no-warnings',
      K3S_VM_KUBECONFIG: realGuest()!.provided.kubeconfigPath,
      K3S_VM_ALLOW_CONTEXTS: '*',
      DIAGNOSTICS_IMAGE: image,
      NO_COLOR: '1',
    });
    expect(result.exitCode, result.all).toBe(1);
    expect(result.all).toMatch(/Tests:\s+1 failed, 1 passed, 2 total/);
    expect(result.all).toMatch(/Expected: "healthy"\s+Received: "degraded"/);
    const reports = result.all.match(/k3s-vm diagnostics of namespace t-a-failing-jest-test-[a-z0-9-]+ \(collected in \d+\.\d+ s\)/g) ?? [];
    expect(reports, result.all).toHaveLength(1);
    expect(result.all).toMatch(/ {2}talker\/app:\n\s+boom from the jest test/);
  });
});
