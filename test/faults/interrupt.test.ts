// Item 1: Ctrl-C during boot and SIGTERM during the tests leave a plainly stopped instance.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clusterStatus, stopCluster } from '../../src/cluster/index.js';
import { files } from '../../src/state/files.js';
import { consumerEnv, linkPackage, qemuProcessesUsing, runIn } from '../helpers/consumer.js';
import { freshStateDir, repoRoot } from '../helpers/test-guest.js';

const project = join(repoRoot, 'fixtures', 'consumer-vitest');
const dirs: string[] = [];
beforeAll(() => linkPackage(project));
afterAll(async () => {
  for (const dir of dirs) await stopCluster({ env: consumerEnv(dir), force: true }).catch(() => undefined);
});

const leftovers = (dir: string) => [files.pid, files.runtime, files.lock, files.kubeconfig].filter((name) => existsSync(join(dir, name)));

describe('an interrupted run', () => {
  it('item 1: SIGINT to the process group during boot leaves the VM stopped, with no pid, runtime or lock file; SIGTERM during the tests leaves no lock', async () => {
    const dir = freshStateDir('faults-int');
    dirs.push(dir);
    const env = consumerEnv(dir);
    // A terminal's Ctrl-C reaches the whole process group: the run gets one of its own.
    const run = execa('vitest', ['run'], { cwd: project, env, reject: false, all: true, preferLocal: true, localDir: repoRoot, stdin: 'ignore', detached: true });
    await expect.poll(() => qemuProcessesUsing(dir).length, { timeout: 120_000, interval: 100 }).toBe(1);
    process.kill(-run.pid!, 'SIGINT');
    const result = await run;
    expect(result.exitCode).not.toBe(0);
    await expect.poll(() => qemuProcessesUsing(dir).length, { timeout: 30_000, interval: 200 }).toBe(0);
    expect(leftovers(dir)).toEqual([]);
    const status = await clusterStatus({ env });
    expect(status.state, status.reasons.join('; ')).toBe('stopped');

    // The next start needs no clean-up; then SIGTERM while its tests run.
    const next = runIn(project, 'vitest', ['run', '--config', 'vitest.interrupt.config.ts'], env);
    let output = '';
    next.all?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    await expect.poll(() => output, { timeout: 120_000, interval: 100 }).toMatch(/slow test started/);
    expect(output).not.toMatch(/cleaning up/);
    next.kill('SIGTERM');
    await next;
    await expect.poll(() => qemuProcessesUsing(dir).length, { timeout: 30_000, interval: 200 }).toBe(0);
    expect(leftovers(dir)).toEqual([]);
    expect((await clusterStatus({ env })).state).toBe('stopped');
  });
});
