// The instance lock: one holder at a time, taken over from a dead holder.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { files } from '../../src/state/files.js';
import { InstanceDir } from '../../src/state/instance-dir.js';
import { acquireLock, parseLockRecord } from '../../src/state/lock.js';
import { deadPid } from '../support/state-dirs.js';

const root = mkdtempSync(join(tmpdir(), 'k3s-vm-lock-'));

async function freshDir(name: string): Promise<InstanceDir> {
  const dir = new InstanceDir(join(root, name));
  await dir.ensure();
  return dir;
}

describe('the lock', () => {
  it('is exclusive, waits for the holder and names it when it gives up', async () => {
    const dir = await freshDir('lock');
    const first = await acquireLock(dir, { timeoutMs: 1000 });
    let waitedFor: number | undefined;
    await expect(acquireLock(dir, { timeoutMs: 300, onWait: (pid) => (waitedFor = pid) })).rejects.toMatchObject({
      code: 'LOCK_TIMEOUT',
      message: expect.stringContaining(`process ${process.pid}`),
    });
    expect(waitedFor).toBe(process.pid);
    const second = acquireLock(dir, { timeoutMs: 5000 });
    await first.release();
    await (await second).release();
  });

  it('takes over a lock whose holder died', async () => {
    const dir = await freshDir('lock-dead');
    await dir.writeAtomic(files.lock, `${deadPid()}\n`);
    const lock = await acquireLock(dir, { timeoutMs: 1000 });
    expect(parseLockRecord((await dir.readText(files.lock)) ?? '')?.pid).toBe(process.pid);
    await lock.release();
    expect(dir.exists(files.lock)).toBe(false);
  });
});
