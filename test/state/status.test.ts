// Status derived from the pid file and process liveness, never stored; the QMP socket path.
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { files } from '../../src/state/files.js';
import { InstanceDir } from '../../src/state/instance-dir.js';
import { isInstanceQemu } from '../../src/state/process.js';
import { deriveStatus, qmpSocketPath } from '../../src/state/status.js';
import { deadPid } from '../support/state-dirs.js';

const root = mkdtempSync(join(tmpdir(), 'k3s-vm-status-'));
const children: Array<{ kill(): void }> = [];
afterAll(() => children.forEach((c) => c.kill()));

async function freshDir(name: string): Promise<InstanceDir> {
  const dir = new InstanceDir(join(root, name));
  await dir.ensure();
  return dir;
}

describe('the QMP socket path', () => {
  it('stays under the Unix socket limit however deep the directory is', () => {
    const shallow = new InstanceDir('/tmp/x/.k3s-vm');
    expect(qmpSocketPath(shallow)).toBe('/tmp/x/.k3s-vm/qmp.sock');
    const deep = new InstanceDir(`/tmp/${'d'.repeat(150)}/.k3s-vm`);
    expect(Buffer.byteLength(qmpSocketPath(deep))).toBeLessThanOrEqual(107);
    expect(qmpSocketPath(deep)).toBe(qmpSocketPath(new InstanceDir(deep.path)));
  });
});

describe('derived status', () => {
  it('is stopped without a pid file', async () => {
    const dir = await freshDir('stopped');
    expect((await deriveStatus(dir)).state).toBe('stopped');
  });

  it('is broken when the recorded QEMU is gone, and says so', async () => {
    const dir = await freshDir('dead');
    await dir.writeAtomic(files.pid, `${deadPid()}\n`);
    const status = await deriveStatus(dir);
    expect(status.state).toBe('broken');
    expect(status.reasons.join()).toMatch(/is gone but was not stopped cleanly/);
    expect(status.pid).toBeUndefined();
  });

  it('recognises a pid file that points at an unrelated live process, and does not claim it', async () => {
    const dir = await freshDir('stale');
    const unrelated = spawn('sleep', ['60']);
    children.push(unrelated);
    await dir.writeAtomic(files.pid, `${unrelated.pid}\n`);
    const status = await deriveStatus(dir);
    expect(status.state).toBe('broken');
    expect(status.reasons.join()).toMatch(/not this VM's QEMU/);
    expect(status.pid).toBeUndefined();
    expect(status.recordedPid).toBe(unrelated.pid);
    expect(isInstanceQemu(unrelated.pid!, qmpSocketPath(dir))).toBe(false);
  });
});
