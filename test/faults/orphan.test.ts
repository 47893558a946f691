// Item 2: a start that fails after QEMU was spawned still finds and stops that QEMU.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { clusterStatus, startCluster, stopCluster } from '../../src/cluster/index.js';
import { files } from '../../src/state/files.js';
import { qemuProcessesUsing } from '../helpers/consumer.js';
import { testGuestOptions } from '../helpers/test-guest.js';

const opts = testGuestOptions('faults-orphan');
afterAll(async () => {
  await stopCluster({ ...opts, force: true }).catch(() => undefined);
});

describe('a state file that cannot be written after QEMU started', () => {
  it('item 2: stops that QEMU, leaves the instance stopped and says which file', async () => {
    for (const name of [files.pid, files.runtime]) {
      // A folder where the file belongs: the write after the spawn fails.
      mkdirSync(join(opts.dir, name, 'in-the-way'), { recursive: true });
      const error = await startCluster(opts).catch((e: unknown) => e);
      expect(error).toMatchObject({ name: 'K3sVmError', code: 'STATE_WRITE_FAILED' });
      expect((error as Error).message).toContain(join(opts.dir, name));
      expect((error as { hint?: string }).hint).toMatch(/in the way/);
      await expect.poll(() => qemuProcessesUsing(opts.dir).length, { timeout: 10_000, interval: 100 }).toBe(0);
      expect((await clusterStatus(opts)).state).toBe('stopped');
    }
  });
});
