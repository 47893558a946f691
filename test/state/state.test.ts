import { spawn } from 'node:child_process';
import { mkdtempSync, statSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { files } from '../../src/state/files.js';
import { InstanceDir } from '../../src/state/instance-dir.js';
import { liveLeases, takeLease } from '../../src/state/leases.js';
import { acquireLock } from '../../src/state/lock.js';
import { isInstanceQemu } from '../../src/state/process.js';
import { deriveStatus, qmpSocketPath } from '../../src/state/status.js';
import { logTailBlock, tailFile } from '../../src/state/serial-log.js';

const root = mkdtempSync(join(tmpdir(), 'k3s-vm-state-'));
const children: Array<{ kill(): void }> = [];
afterAll(() => children.forEach((c) => c.kill()));

async function freshDir(name: string): Promise<InstanceDir> {
  const dir = new InstanceDir(join(root, name));
  await dir.ensure();
  return dir;
}

describe('the instance directory', () => {
  it('is created 0700 and ignores itself in git', async () => {
    const dir = await freshDir('perms');
    expect(statSync(dir.path).mode & 0o777).toBe(0o700);
    expect(await dir.readText(files.gitignore)).toMatch(/^\*$/m);
  });

  it('writes files atomically with mode 0600 and leaves no temporary files', async () => {
    const dir = await freshDir('atomic');
    await Promise.all(Array.from({ length: 20 }, (_, i) => dir.writeJson(files.runtime, { i })));
    expect(statSync(dir.file(files.runtime)).mode & 0o777).toBe(0o600);
    expect((await dir.readJson<{ i: number }>(files.runtime))!.i).toBeGreaterThanOrEqual(0);
    expect(readdirSync(dir.path).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });

  it('reports a corrupt JSON file with the remedy', async () => {
    const dir = await freshDir('corrupt');
    await dir.writeAtomic(files.runtime, '{not json');
    await expect(dir.readJson(files.runtime)).rejects.toMatchObject({ code: 'STATE_INVALID', hint: expect.stringContaining('delete') });
  });

  it('keeps the QMP socket path under the Unix socket limit however deep the directory is', () => {
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
    const child = spawn('true');
    await new Promise((resolve) => child.once('exit', resolve));
    await dir.writeAtomic(files.pid, `${child.pid}\n`);
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

  it('identifies a process by the QMP socket on its command line', async () => {
    const dir = await freshDir('ours');
    const socket = qmpSocketPath(dir);
    // A stand-in process whose argv carries the socket the way QEMU's does.
    const fake = spawn('sh', ['-c', 'sleep 60', 'qemu', '-qmp', `unix:${socket},server=on,wait=off`]);
    children.push(fake);
    expect(isInstanceQemu(fake.pid!, socket)).toBe(true);
    expect(isInstanceQemu(fake.pid!, `${socket}.other`)).toBe(false);
  });
});

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
    const child = spawn('true');
    await new Promise((resolve) => child.once('exit', resolve));
    await dir.writeAtomic(files.lock, `${child.pid}\n`);
    const lock = await acquireLock(dir, { timeoutMs: 1000 });
    expect(await dir.readText(files.lock)).toBe(`${process.pid}\n`);
    await lock.release();
    expect(dir.exists(files.lock)).toBe(false);
  });
});

describe('leases', () => {
  it('counts live holders and drops the leases of dead processes', async () => {
    const dir = await freshDir('leases');
    const mine = await takeLease(dir);
    const child = spawn('true');
    await new Promise((resolve) => child.once('exit', resolve));
    await dir.writeJson(join(files.leasesDir, `${child.pid}-dead.json`), { pid: child.pid, createdAt: '' });
    const live = await liveLeases(dir);
    expect(live.map((l) => l.pid)).toEqual([process.pid]);
    expect(readdirSync(dir.file(files.leasesDir))).toHaveLength(1);
    await mine.release();
    expect(await liveLeases(dir)).toEqual([]);
  });
});

describe('the serial log tail', () => {
  it('returns the last lines without terminal escapes, and an empty marker for a missing log', async () => {
    const dir = await freshDir('serial');
    await dir.writeAtomic(files.serialLog, `${Array.from({ length: 50 }, (_, i) => `line ${i}\r`).join('\n')}\n\x1b[0mlast\n`);
    const tail = await tailFile(dir.file(files.serialLog), 3);
    expect(tail.split('\n')).toEqual(['line 48', 'line 49', 'last']);
    expect(logTailBlock('serial', '')).toBe('serial: (empty)');
    expect(await tailFile(join(root, 'missing.log'))).toBe('');
  });
});
