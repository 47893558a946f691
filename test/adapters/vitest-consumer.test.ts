// The Vitest adapter as users meet it: a consumer project run by the real vitest.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stopCluster } from '../../src/cluster/index.js';
import { files } from '../../src/state/files.js';
import { isRunning } from '../../src/state/process.js';
import { consumerEnv, interruptDuringTests, linkPackage, qemuProcessesUsing, runIn } from '../helpers/consumer.js';
import { freshStateDir, repoRoot } from '../helpers/test-guest.js';

const project = join(repoRoot, 'fixtures', 'consumer-vitest');
const dirs: string[] = [];


beforeAll(() => linkPackage(project));
afterAll(async () => {
  for (const dir of dirs) await stopCluster({ dir, env: {}, force: true }).catch(() => undefined);
});

describe('a Vitest project with globalSetup: k3s-vm/vitest', () => {
  it('boots the VM, runs its tests against it, and leaves nothing running', async () => {
    const dir = freshStateDir('vitest-once');
    dirs.push(dir);
    const run = await runIn(project, 'vitest', ['run'], consumerEnv(dir));
    expect(run.all).toMatch(/booting consumer/);
    expect(run.all).toMatch(/Tests\s+10 passed \(10\)/);
    expect(run.exitCode).toBe(0);
    expect(qemuProcessesUsing(dir)).toEqual([]);
    expect(readdirOrEmpty(join(dir, files.leasesDir))).toEqual([]);
  });

  it('with K3S_VM_KEEP=1 keeps the VM, and the next run attaches to the same QEMU without booting', async () => {
    const dir = freshStateDir('vitest-keep');
    dirs.push(dir);
    const first = await runIn(project, 'vitest', ['run'], consumerEnv(dir, { K3S_VM_KEEP: '1' }));
    expect(first.exitCode, first.all).toBe(0);
    const pid = Number.parseInt(readFileSync(join(dir, files.pid), 'utf8'), 10);
    expect(isRunning(pid)).toBe(true);
    expect(first.all).toMatch(/leaving the VM running \(kept/);

    const second = await runIn(project, 'vitest', ['run'], consumerEnv(dir, { K3S_VM_KEEP: '1' }));
    expect(second.exitCode, second.all).toBe(0);
    expect(second.all).toMatch(new RegExp(`attached to the running VM \\(pid ${pid}`));
    expect(second.all).not.toMatch(/booting consumer/);
    expect(Number.parseInt(readFileSync(join(dir, files.pid), 'utf8'), 10)).toBe(pid);

    // A run without keep attaches too, and does not stop a VM that a keep run started.
    const third = await runIn(project, 'vitest', ['run'], consumerEnv(dir));
    expect(third.exitCode, third.all).toBe(0);
    expect(isRunning(pid)).toBe(true);
    await stopCluster({ dir, env: {} });
    expect(isRunning(pid)).toBe(false);
  });

  it('restarts a kept VM whose configuration changed, saying what changed', async () => {
    const dir = freshStateDir('vitest-change');
    dirs.push(dir);
    const first = await runIn(project, 'vitest', ['run'], consumerEnv(dir, { K3S_VM_KEEP: '1' }));
    expect(first.exitCode, first.all).toBe(0);
    const pid = Number.parseInt(readFileSync(join(dir, files.pid), 'utf8'), 10);
    const second = await runIn(project, 'vitest', ['run'], consumerEnv(dir, { K3S_VM_KEEP: '1', K3S_VM_MEMORY: '1100' }));
    expect(second.exitCode, second.all).toBe(0);
    expect(second.all).toMatch(/restarting the VM because its configuration changed:\s+k3s-vm: +memoryMiB: 1024 → 1100/);
    expect(isRunning(pid)).toBe(false);
    await stopCluster({ dir, env: {} });
  });

  it('boots one VM for two runs started together; both pass and it stops after the last', async () => {
    const dir = freshStateDir('vitest-pair');
    dirs.push(dir);
    const [a, b] = await Promise.all([runIn(project, 'vitest', ['run'], consumerEnv(dir)), runIn(project, 'vitest', ['run'], consumerEnv(dir))]);
    expect(a.exitCode, a.all).toBe(0);
    expect(b.exitCode, b.all).toBe(0);
    const boots = [a.all, b.all].filter((out) => /booting consumer/.test(out)).length;
    expect(boots).toBe(1);
    expect(qemuProcessesUsing(dir)).toEqual([]);
  });

  it('leaves no QEMU behind when the run gets SIGTERM during boot', async () => {
    const dir = freshStateDir('vitest-term');
    dirs.push(dir);
    const run = runIn(project, 'vitest', ['run'], consumerEnv(dir));
    await expect.poll(() => qemuProcessesUsing(dir).length, { timeout: 120_000, interval: 200 }).toBe(1);
    run.kill('SIGTERM');
    const result = await run;
    expect(result.exitCode).not.toBe(0);
    await expect.poll(() => qemuProcessesUsing(dir).length, { timeout: 30_000, interval: 200 }).toBe(0);
  });

  it('leaves no QEMU behind when the run gets SIGINT during the tests', async () => {
    const dir = freshStateDir('vitest-int');
    dirs.push(dir);
    await interruptDuringTests(project, 'vitest', ['run', '--config', 'vitest.interrupt.config.ts'], consumerEnv(dir), dir, 'SIGINT');
  });
});

function readdirOrEmpty(path: string): string[] {
  return existsSync(path) ? readdirSync(path) : [];
}
