// How a start fails: every failure names what went wrong and leaves nothing running.
import { spawn } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { startCluster, stopCluster } from '../../src/cluster/index.js';
import { K3sVmError } from '../../src/errors.js';
import { files } from '../../src/state/files.js';
import { InstanceDir } from '../../src/state/instance-dir.js';
import { isRunning } from '../../src/state/process.js';
import { scriptVm } from '../support/script-vm.js';
import { useStateDirs } from '../support/state-dirs.js';

const dirs = useStateDirs();
const children: Array<{ kill(): boolean }> = [];
afterAll(() => children.forEach((child) => child.kill()));

describe('a start that fails', () => {
  it('ends the wait at once when the VM exits, with the serial log in the error', async () => {
    const nix = scriptVm('exits', 'echo "guest: cannot mount the root disk"; echo "Kernel panic - not syncing"; exit 1');
    const opts = dirs.options('exits', { nix, timeoutSeconds: 600 });
    const started = Date.now();
    const error = (await startCluster(opts).catch((e: unknown) => e)) as K3sVmError;
    expect(error).toBeInstanceOf(K3sVmError);
    expect(error.code).toBe('QEMU_EXITED');
    expect(error.message).toMatch(/the VM stopped while waiting for step 1 of 7 "SSH answers": QEMU \(pid \d+\) exited with code 1/);
    expect(error.details).toMatch(/\| guest: cannot mount the root disk\n\s+\| Kernel panic - not syncing/);
    // Far from the 600 s deadline: the exit was noticed, not waited out (a build and a launch take seconds).
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(new InstanceDir(opts.dir).exists(files.pid)).toBe(false);
  });

  it('gives up on SSH at the deadline, stops the VM and shows the serial log', async () => {
    const nix = scriptVm('silent', 'echo "guest: waiting forever"; exec sh -c "sleep 600" run-vm $QEMU_OPTS');
    const opts = dirs.options('silent', { nix, timeoutSeconds: 3 });
    const error = (await startCluster(opts).catch((e: unknown) => e)) as K3sVmError;
    expect(error.code).toBe('NOT_READY');
    expect(error.message).toMatch(/^K3s not ready before the deadline \(step 1 of 7 "SSH answers", waited \d+ s\); last error: /);
    expect(error.details).toMatch(/guest: waiting forever/);
    // The deadline was given as an option: the remedy names the option, not its variable.
    expect(error.hint).toMatch(/; if it only needs longer, raise option timeoutSeconds$/);
    expect(new InstanceDir(opts.dir).exists(files.pid)).toBe(false);
  });

  it('never signals an unrelated process that a stale pid file names', async () => {
    const opts = dirs.options('stale', { nix: scriptVm('stale', 'exit 0') });
    const unrelated = spawn('sleep', ['300']);
    children.push(unrelated);
    const dir = new InstanceDir(opts.dir);
    await dir.ensure();
    await dir.writeAtomic(files.pid, `${unrelated.pid}\n`);
    const result = await stopCluster(opts);
    expect(result.previous).toBe('broken');
    expect(isRunning(unrelated.pid!)).toBe(true);
    expect(dir.exists(files.pid)).toBe(false);
  });
});
