// Readiness on a booting test guest: a step that never passes, and a VM that dies during the steps.
import { describe, it } from 'vitest';
import { startCluster } from '../../src/cluster/index.js';
import type { K3sVmError } from '../../src/errors.js';
import { files } from '../../src/state/files.js';
import { InstanceDir } from '../../src/state/instance-dir.js';
import { readQemuPid, useStateDirs } from '../support/state-dirs.js';
import { recordingLogger } from '../support/test-guest.js';

const dirs = useStateDirs();
/** The fake K3s API's node stays NotReady for an hour. */
const nodeNeverReady = ['k3s_fake.node_ready_delay_ms=3600000'];

// The two boot side by side: one idles until its deadline while the other is killed.
describe.concurrent('readiness on the test guest', () => {
  it('names the step that did not pass, its last error and the serial log', async ({ expect }) => {
    // The deadline counts from the launch. The node never turns Ready, so the boot ends at it:
    // at step 5 once the guest has come that far (about 6 s alone, up to 15 s beside the rest of
    // the suite), at an earlier step on a host so busy that it has not. Either way the error
    // names the step and its last error.
    const opts = dirs.options('not-ready', { kernelParams: nodeNeverReady, timeoutSeconds: 25 });
    const error = (await startCluster(opts).catch((e: unknown) => e)) as K3sVmError;
    expect(error.code, error.message).toBe('NOT_READY');
    process.stderr.write(`readiness-vm: ${error.message.split(';')[0]}\n`);
    const step = /^K3s not ready before the deadline \(step (\d) of 7 "([^"]+)", waited \d+ s\); last error: (.+)/s.exec(error.message);
    expect(step, error.message).not.toBeNull();
    if (step![1] === '5') {
      expect(step![2]).toBe('node Ready');
      expect(step![3]).toMatch(/^node test-guest is not Ready \(KubeletNotReady/);
      expect(error.hint).toMatch(/kubectl describe nodes/);
    }
    expect(error.hint).toBeTruthy();
    expect(error.details).toMatch(/last lines of the serial console/);
    expect(new InstanceDir(opts.dir).exists(files.pid)).toBe(false);
  });

  it('ends at once when QEMU dies during the readiness steps', async ({ expect }) => {
    const logger = recordingLogger();
    const opts = dirs.options('dies', { kernelParams: nodeNeverReady, timeoutSeconds: 600, logger });
    const starting = startCluster(opts).catch((e: unknown) => e);
    await expect.poll(() => logger.lines.some((l) => l.includes('"API /readyz ok"')), { timeout: 120_000, interval: 100 }).toBe(true);
    process.kill(readQemuPid(opts.dir), 'SIGKILL');
    const killedAt = Date.now();
    const error = (await starting) as K3sVmError;
    expect(error.code).toBe('QEMU_EXITED');
    expect(error.message).toMatch(/^the VM stopped while waiting for step 5 of 7 "node Ready": QEMU \(pid \d+\) exited/);
    expect(Date.now() - killedAt).toBeLessThan(30_000);
  });
});
