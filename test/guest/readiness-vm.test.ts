// Readiness on a booting test guest: a step that never passes, and a VM that dies during the steps.
import { describe, it } from 'vitest';
import { startCluster } from '../../src/cluster/index.js';
import type { K3sVmError } from '../../src/errors.js';
import { files } from '../../src/state/files.js';
import { InstanceDir } from '../../src/state/instance-dir.js';
import { readQemuPid, useStateDirs } from '../helpers/state-dirs.js';
import { recordingLogger } from '../helpers/test-guest.js';

const dirs = useStateDirs();
/** The fake K3s API's node stays NotReady for an hour. */
const nodeNeverReady = ['k3s_fake.node_ready_delay_ms=3600000'];

// The two boot side by side: one idles until its deadline while the other is killed.
describe.concurrent('readiness on the test guest', () => {
  it('names the step that did not pass, its last error and the serial log', async ({ expect }) => {
    // Long enough for the guest to reach step 5 under emulation beside other boots (about 6 s
    // alone; 20 s, 45 s and 90 s were each once too short with the cores busy beside the suite's
    // other boots: the deadline must outlast the slowest boot to step 5); the rest is idle waiting.
    const opts = dirs.options('not-ready', { kernelParams: nodeNeverReady, timeoutSeconds: 240 });
    const error = (await startCluster(opts).catch((e: unknown) => e)) as K3sVmError;
    expect(error.code).toBe('NOT_READY');
    expect(error.message).toMatch(
      /^K3s not ready before the deadline \(step 5 of 7 "node Ready", waited \d+ s\); last error: node test-guest is not Ready \(KubeletNotReady/,
    );
    expect(error.details).toMatch(/last lines of the serial console/);
    expect(error.hint).toMatch(/kubectl describe nodes/);
    expect(new InstanceDir(opts.dir).exists(files.pid)).toBe(false);
  }, 300_000);

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
