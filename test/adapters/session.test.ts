// One cluster per runner process, however often the runner calls global setup.
import { afterAll, describe, expect, it } from 'vitest';
import { createGlobalSetup } from '../../src/adapters/vitest/index.js';
import { rewindProvided, type ProvidedCluster } from '../../src/adapters/session.js';
import { stopCluster } from '../../src/cluster/index.js';
import { isRunning } from '../../src/state/process.js';
import { readQemuPid } from '../support/state-dirs.js';
import { recordingLogger, testGuestOptions } from '../support/test-guest.js';

const options = testGuestOptions('session');
afterAll(() => stopCluster({ dir: options.dir, env: {}, force: true }).catch(() => undefined));

describe('the Vitest global setup in one process', () => {
  it('boots once when called twice, provides the same cluster, and stops after the last teardown', async () => {
    const logger = recordingLogger();
    const setup = createGlobalSetup({ ...options, logger });
    const provided: ProvidedCluster[] = [];
    const project = { provide: (_key: string, value: ProvidedCluster) => provided.push(value) };
    const [teardownA, teardownB] = await Promise.all([setup(project as never), setup(project as never)]);
    expect(provided).toHaveLength(2);
    expect(provided[1]).toBe(provided[0]);
    expect(logger.lines.filter((line) => line.startsWith('booting test-guest'))).toHaveLength(1);
    expect(provided[0]).toMatchObject({
      name: 'test-guest',
      booted: true,
      apiServerUrl: `https://127.0.0.1:${provided[0]!.apiPort}`,
      // Neither was given: a remedy names the variable.
      names: { snapshot: 'K3S_VM_SNAPSHOT', kubeconfig: 'K3S_VM_KUBECONFIG' },
    });
    // Only plain data crosses to the test workers.
    expect(structuredClone(provided[0])).toEqual(provided[0]);

    const pid = readQemuPid(options.dir);
    await teardownA();
    expect(isRunning(pid)).toBe(true);
    await teardownB();
    expect(isRunning(pid)).toBe(false);
  });

  it('provides how the run named its settings, and a rewind on an existing cluster is refused in those terms', async () => {
    const existing = {
      kind: 'existing',
      name: 'ci-shared',
      dir: undefined,
      leaseId: undefined,
      names: { snapshot: 'option snapshot', kubeconfig: '--kubeconfig' },
    } as unknown as ProvidedCluster;
    await expect(rewindProvided(existing)).rejects.toMatchObject({
      code: 'NOT_RUNNING',
      message: 'k3s-vm: there is no VM to rewind: the run uses the existing cluster ci-shared',
      hint: 'rewind needs the VM and its snapshot (snapshot: true); leave --kubeconfig out, or isolate tests with namespaces',
    });
  });
});
