// The Vitest adapter as users meet it: a consumer project run by the real vitest.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { stopCluster } from '../../src/cluster/index.js';
import { files } from '../../src/state/files.js';
import { isRunning } from '../../src/state/process.js';
import { consumerEnv, consumerVitestProject as project, linkPackage, qemuProcessesUsing, runIn } from '../support/consumer.js';
import { consumerSnapshotDir, snapshotConsumerEnv } from '../support/consumer-snapshot.js';
import { interruptDuringTests } from '../support/interrupt.js';
import { readQemuPid, useStateDirs } from '../support/state-dirs.js';
import { repoRoot } from '../support/test-guest.js';
import { examplesNeedingPods } from '../../fixtures/consumer-vitest/examples-needing-pods.ts';

const dirs = useStateDirs();
beforeAll(() => linkPackage(project));

/** The README's example suites, which one consumer run includes (vitest.examples.config.ts). */
const examples = readdirSync(join(repoRoot, 'examples')).filter((name) => name.endsWith('.test.ts') && !examplesNeedingPods.includes(name));

function readdirOrEmpty(path: string): string[] {
  return existsSync(path) ? readdirSync(path) : [];
}

/**
 * A consumer run that started the VM: booted it, or restored the suite's snapshot of it. Where
 * the subject is not the cold boot, the runs start from that snapshot (consumer-snapshot.ts).
 */
const startedVm = /(booting|restoring the saved) consumer/;

describe('a Vitest project with globalSetup: k3s-vm/vitest', () => {
  it('boots one VM for two runs started together; both pass against it and it stops after the last', async () => {
    const dir = dirs.add(consumerSnapshotDir('vitest-pair'));
    // One of the two also runs the README's examples (vitest.examples.config.ts), so it ends last.
    const [a, b] = await Promise.all([
      runIn(project, 'vitest', ['run', '--config', 'vitest.examples.config.ts'], snapshotConsumerEnv(dir)),
      runIn(project, 'vitest', ['run'], snapshotConsumerEnv(dir)),
    ]);
    expect(a.exitCode, a.all).toBe(0);
    expect(b.exitCode, b.all).toBe(0);
    // Every test passed, none skipped: the consumer's own three, plus every example in A.
    expect(b.all).toMatch(/Tests\s+3 passed \(3\)/);
    const [, passed, total] = /Tests\s+(\d+) passed \((\d+)\)/.exec(a.all) ?? [];
    expect(passed).toBe(total);
    expect(Number(passed)).toBeGreaterThanOrEqual(3 + examples.length);
    for (const example of examples) expect(a.all).toContain(`examples/${example}`);
    const boots = [a.all, b.all].filter((out) => startedVm.test(out)).length;
    expect(boots).toBe(1);
    expect(qemuProcessesUsing(dir)).toEqual([]);
    expect(readdirOrEmpty(join(dir, files.leasesDir))).toEqual([]);
  });

  it('with K3S_VM_KEEP=1 keeps the VM: later runs attach to the same QEMU without booting, and restart it when its configuration changed', async () => {
    const dir = dirs.add(consumerSnapshotDir('vitest-keep'));
    const first = await runIn(project, 'vitest', ['run'], snapshotConsumerEnv(dir, { K3S_VM_KEEP: '1' }));
    expect(first.exitCode, first.all).toBe(0);
    expect(first.all).toMatch(startedVm);
    const pid = readQemuPid(dir);
    expect(isRunning(pid)).toBe(true);
    expect(first.all).toMatch(/leaving the VM running \(kept/);

    const second = await runIn(project, 'vitest', ['run'], snapshotConsumerEnv(dir, { K3S_VM_KEEP: '1' }));
    expect(second.exitCode, second.all).toBe(0);
    expect(second.all).toMatch(new RegExp(`attached to the running VM \\(pid ${pid}`));
    expect(second.all).not.toMatch(startedVm);
    expect(readQemuPid(dir)).toBe(pid);

    // A run without keep attaches too, and does not stop a VM that a keep run started.
    const third = await runIn(project, 'vitest', ['run'], snapshotConsumerEnv(dir));
    expect(third.exitCode, third.all).toBe(0);
    expect(third.all).not.toMatch(startedVm);
    expect(isRunning(pid)).toBe(true);

    // A changed configuration is not attached to silently: the VM is restarted, saying what changed.
    // The snapshot was saved with 1024 MiB: it is not restored, the VM boots.
    const changed = await runIn(project, 'vitest', ['run'], snapshotConsumerEnv(dir, { K3S_VM_KEEP: '1', K3S_VM_MEMORY: '1100' }));
    expect(changed.exitCode, changed.all).toBe(0);
    expect(changed.all).toMatch(/restarting the VM because its configuration changed:\s+k3s-vm: +memoryMiB: 1024 → 1100/);
    expect(changed.all).toMatch(/booting consumer/);
    expect(isRunning(pid)).toBe(false);
    const restarted = readQemuPid(dir);
    expect(isRunning(restarted)).toBe(true);
    await stopCluster({ dir, env: {} });
    expect(isRunning(restarted)).toBe(false);
    // Four consumer runs, a restore and a boot, each a Vitest start-up: past the default 180 s
    // when the suite's other files boot beside it.
  }, 360_000);

  it('leaves no QEMU behind when the run gets SIGTERM during boot', async () => {
    const dir = dirs.fresh('vitest-term');
    const run = runIn(project, 'vitest', ['run'], consumerEnv(dir));
    await expect.poll(() => qemuProcessesUsing(dir).length, { timeout: 120_000, interval: 200 }).toBe(1);
    run.kill('SIGTERM');
    const result = await run;
    expect(result.exitCode).not.toBe(0);
    await expect.poll(() => qemuProcessesUsing(dir).length, { timeout: 30_000, interval: 200 }).toBe(0);
  });

  it('leaves no QEMU behind when the run gets SIGINT during the tests', async () => {
    const dir = dirs.add(consumerSnapshotDir('vitest-int'));
    await interruptDuringTests(
      project,
      'vitest',
      ['run', '--config', 'vitest.interrupt.config.ts'],
      snapshotConsumerEnv(dir),
      dir,
      'SIGINT',
    );
  });
});
