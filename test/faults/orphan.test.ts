// Item 2: a start that fails after QEMU was spawned still finds and stops that QEMU.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { clusterStatus, startCluster, stopCluster } from '../../src/cluster/index.js';
import { files } from '../../src/state/files.js';
import { qemuProcessesUsing } from '../helpers/consumer.js';
import { testGuestOptions } from '../helpers/test-guest.js';
import { seededStateDir } from './helpers.js';

const opts = testGuestOptions('faults-orphan', { dir: seededStateDir('faults-orphan') });
afterAll(async () => {
  await stopCluster({ ...opts, force: true }).catch(() => undefined);
});

describe('a state file that cannot be written after QEMU started', () => {
  it('item 2: stops that QEMU, leaves the instance stopped and says which file', async () => {
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
});
