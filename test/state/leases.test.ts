// Leases: who is using the VM, so the last user (and only it) stops it.
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { files } from '../../src/state/files.js';
import { InstanceDir } from '../../src/state/instance-dir.js';
import { liveLeases, takeLease } from '../../src/state/leases.js';
import { deadPid } from '../support/state-dirs.js';

describe('leases', () => {
  it('counts live holders and drops the leases of dead processes', async () => {
    const dir = new InstanceDir(join(mkdtempSync(join(tmpdir(), 'k3s-vm-leases-')), 'state'));
    await dir.ensure();
    const mine = await takeLease(dir);
    const dead = deadPid();
    await dir.writeJson(join(files.leasesDir, `${dead}-dead.json`), { pid: dead, createdAt: '' });
    const live = await liveLeases(dir);
    expect(live.map((l) => l.pid)).toEqual([process.pid]);
    expect(readdirSync(dir.file(files.leasesDir))).toHaveLength(1);
    await mine.release();
    expect(await liveLeases(dir)).toEqual([]);
  });
});
