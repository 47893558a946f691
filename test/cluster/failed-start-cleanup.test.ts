// A start that fails after QEMU was spawned still finds and stops that QEMU.
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { clusterStatus, startCluster, stopCluster } from '../../src/cluster/index.js';
import { files } from '../../src/state/files.js';
import { qemuProcessesUsing } from '../support/consumer.js';
import { repoRoot, testGuestOptions } from '../support/test-guest.js';
import { cliEnv } from '../support/cli.js';
import { seededStateDir } from '../support/seeded-state-dir.js';

const opts = testGuestOptions('faults-orphan', { dir: seededStateDir('faults-orphan') });
const cliDir = seededStateDir('faults-orphan-cli');
afterAll(async () => {
  await stopCluster({ ...opts, force: true }).catch(() => undefined);
  await stopCluster({ env: cliEnv(cliDir), force: true }).catch(() => undefined);
});

describe('a state file that cannot be written after QEMU started', () => {
  it('stops that QEMU, leaves the instance stopped and says which file', async () => {
    {
      // A folder where the runtime record belongs: the write after the spawn fails.
      const name = files.runtime;
      mkdirSync(join(opts.dir, name, 'in-the-way'), { recursive: true });
      const error = await startCluster(opts).catch((e: unknown) => e);
      // Long enough for a run script left running to have started its QEMU.
      await sleep(3000);
      expect(qemuProcessesUsing(opts.dir)).toEqual([]);
      const status = await clusterStatus(opts);
      expect(status.state, status.reasons.join('; ')).toBe('stopped');
      expect(error).toMatchObject({ name: 'K3sVmError', code: 'STATE_WRITE_FAILED' });
      expect((error as Error).message).toContain(join(opts.dir, name));
      expect((error as { hint?: string }).hint).toMatch(/in the way/);
    }
  });

  it('through the executable: the start ends with the error, its hint and exit code 1, never a silent exit', async () => {
    // Nothing reads the runtime record before the launch (there is no pid file: the VM is
    // plainly stopped), so the folder in its way is met only by the write after QEMU's spawn,
    // while the run script may not have exec'd QEMU yet.
    mkdirSync(join(cliDir, files.runtime, 'in-the-way'), { recursive: true });
    const bin = join(repoRoot, 'dist', 'adapters', 'cli', 'bin.js');
    const run = await execa(process.execPath, [bin, 'start'], { env: cliEnv(cliDir), reject: false, all: true });
    expect(run.all).toMatch(/^k3s-vm: booting /m);
    expect(run.all).not.toMatch(/unsettled top-level await/);
    expect(run.exitCode, run.all).toBe(1);
    expect(run.all).toMatch(new RegExp(`^error: could not write ${join(cliDir, files.runtime)}: EISDIR`, 'm'));
    expect(run.all).toMatch(/^hint: something else is in the way at /m);
    expect(qemuProcessesUsing(cliDir)).toEqual([]);
    expect(existsSync(join(cliDir, files.pid))).toBe(false);
  });
});
