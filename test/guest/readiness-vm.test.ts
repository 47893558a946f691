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
    // The deadline counts from the launch, so it must outlast the boot to step 5 (about 6 s
    // alone; 90 s was once too short while the host ran more than this suite); the rest of it
    // is idle waiting, which holds one of the suite's two workers. The step's own wait is
    // printed, to show the margin.
    const opts = dirs.options('not-ready', { kernelParams: nodeNeverReady, timeoutSeconds: 120 });
    const error = (await startCluster(opts).catch((e: unknown) => e)) as K3sVmError;
    expect(error.code, error.message).toBe('NOT_READY');
    process.stderr.write(`readiness-vm: ${error.message.split(';')[0]}\n`);
    expect(error.message).toMatch(
      /^K3s not ready before the deadline \(step 5 of 7 "node Ready", waited \d+ s\); last error: node test-guest is not Ready \(KubeletNotReady/,
    );
    expect(error.details).toMatch(/last lines of the serial console/);
    expect(error.hint).toMatch(/kubectl describe nodes/);
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
