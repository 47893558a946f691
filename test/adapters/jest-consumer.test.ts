// The Jest adapter as users meet it: a consumer project run by the real Jest.
import { beforeAll, describe, expect, it } from 'vitest';
import { consumerJestProject as project, linkPackage, qemuProcessesUsing, runIn } from '../support/consumer.js';
import { consumerSnapshotDir, snapshotConsumerEnv } from '../support/consumer-snapshot.js';
import { interruptDuringTests } from '../support/interrupt.js';
import { useStateDirs } from '../support/state-dirs.js';

const dirs = useStateDirs();
// The runs start the VM from the suite's snapshot of it (consumer-snapshot.ts): their subject is the adapter, not the cold boot.
const jestEnv = (dir: string, extra: Record<string, string> = {}) =>
  snapshotConsumerEnv(dir, { NODE_OPTIONS: '--experimental-vm-modules --no-warnings', ...extra });

beforeAll(() => linkPackage(project));

describe('a Jest project with k3s-vm/jest/setup and k3s-vm/jest/teardown', () => {
  it('runs its tests against one VM with workers and in band, two runs started together, and leaves nothing running', async () => {
    const dir = dirs.add(consumerSnapshotDir('jest'));
    const [workers, inBand] = await Promise.all([
      runIn(project, 'jest', ['--maxWorkers=2'], jestEnv(dir)),
      runIn(project, 'jest', ['--runInBand'], jestEnv(dir)),
    ]);
    for (const run of [workers, inBand]) {
      expect(run.exitCode, run.all).toBe(0);
      expect(run.all).toMatch(/Tests:\s+4 passed, 4 total/);
    }
    expect([workers.all, inBand.all].filter((out) => /restoring the saved consumer/.test(out))).toHaveLength(1);
    expect(qemuProcessesUsing(dir)).toEqual([]);
  });

  it('leaves no QEMU behind on Ctrl-C, although Jest skips globalTeardown then', async () => {
    const dir = dirs.add(consumerSnapshotDir('jest-int'));
    await interruptDuringTests(project, 'jest', ['--runInBand', '--config', 'jest.interrupt.config.js'], jestEnv(dir), dir, 'SIGINT');
  });
});
