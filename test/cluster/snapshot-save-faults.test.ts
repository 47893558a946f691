// Faults while the ready VM is saved (K3S_VM_SNAPSHOT): QEMU killed during the save, a file system too small for it or filled by it.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa, execaSync } from 'execa';
import { describe, expect, it } from 'vitest';
import { run } from '../../src/adapters/cli/run.js';
import { files } from '../../src/state/files.js';
import { qemuProcessesUsing } from '../support/consumer.js';
import { readQemuPid, useStateDirs } from '../support/state-dirs.js';
import { repoRoot } from '../support/test-guest.js';
import { cli, cliEnv } from '../support/cli.js';
import { seededStateDir } from '../support/seeded-state-dir.js';

const dirs = useStateDirs();
const savingLine = 'saving the ready VM into ';

/** What a failed start must not leave behind. */
const leftovers = (dir: string) =>
  [files.pid, files.runtime, files.kubeconfig, files.snapshotRecord].filter((name) => existsSync(join(dir, name)));

/** The internal snapshots' names in a disk image. */
function snapshotNames(disk: string): string[] {
  const info = JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', disk], { encoding: 'utf8' })) as {
    snapshots?: Array<{ name: string }>;
  };
  return (info.snapshots ?? []).map((entry) => entry.name);
}

describe('the ready VM saved after a cold boot', () => {
  it('QEMU killed during the save: the start ends with QEMU_EXITED, exit code 1, no QEMU, no snapshot recorded', async () => {
    const dir = dirs.add(seededStateDir('faults-save-kill'));
    let killed: number | undefined;
    let err = '';
    const code = await run(['start'], {
      stdout: { write: () => true },
      stderr: {
        write: (chunk: string) => {
          err += chunk;
          // The line comes right before the save is asked of QEMU.
          if (killed === undefined && chunk.includes(savingLine)) {
            killed = readQemuPid(dir);
            process.kill(killed, 'SIGKILL');
          }
          return true;
        },
      },
      env: cliEnv(dir, { K3S_VM_SNAPSHOT: '1' }),
      cwd: repoRoot,
      interactive: false,
    });
    expect(killed, err).toBeDefined();
    expect(code, err).toBe(1);
    expect(err).toMatch(
      new RegExp(`^error: QEMU \\(pid ${killed}\\) exited while the ready VM was being saved into ${join(dir, files.disk)}`, 'm'),
    );
    expect(err).toMatch(/^hint: the VM is gone and nothing of the save was recorded: run again/m);
    expect(err).not.toMatch(/cluster ready/);
    expect(qemuProcessesUsing(dir)).toEqual([]);
    expect(leftovers(dir)).toEqual([]);
    expect(snapshotNames(join(dir, files.disk))).toEqual([]);
    const status = await cli(['status', '--json'], cliEnv(dir));
    expect(JSON.parse(status.out)).toMatchObject({ state: 'stopped' });
  });

  describe('on a small file system (a tmpfs in a user and mount namespace)', () => {
    if (tmpfsUnavailable) {
      it('cannot run here', () => {
        console.log('skipped the small file system cases: unshare --user --mount is not allowed on this host');
        expect(tmpfsUnavailable).toBe(true);
      });
      return;
    }

    it('too small for the save: it is not tried, the run goes on without a snapshot and says why', async () => {
      // 64 MiB: the boot fits, a save of the VM's memory (1024 MiB) does not.
      const result = await startOnTmpfs('faults-save-small', '64M');
      expect(result.code, result.err).toBe(0);
      expect(result.err).toMatch(
        /^k3s-vm: not saving a snapshot of the ready VM: the file system that holds .*disk\.qcow2 has \d+ MiB free/m,
      );
      expect(result.err).toMatch(/^k3s-vm: cluster ready in /m);
      expect(result.err).not.toMatch(/ENOSPC|^error: /m);
      expect(result.snapshots).toEqual([]);
      expect(result.left).toEqual([]);
    });

    it('filled during the save: the start ends with SNAPSHOT_FAILED naming the file system, no QEMU, no snapshot left', async () => {
      // Room for the save when it starts; the file system is filled as it begins.
      const result = await startOnTmpfs('faults-save-fill', '1200M', savingLine);
      expect(result.filled, result.err).toBe(true);
      expect(result.code, result.err).toBe(1);
      expect(result.err).toMatch(/^error: the ready VM could not be saved: the file system that holds .*disk\.qcow2 is full/m);
      expect(result.err).toMatch(
        /^hint: free space on that file system \(df -h .*\) and run again, or start without snapshots \(K3S_VM_SNAPSHOT=0\)/m,
      );
      expect(result.err).not.toMatch(/cluster ready|ENOSPC/);
      expect(result.snapshots).toEqual([]);
      expect(result.left).toEqual([]);
    });
  });
});

/** A mount namespace with a tmpfs needs no root where user namespaces are allowed. */
const tmpfsUnavailable = execaSync('unshare', ['--user', '--map-root-user', '--mount', 'true'], { reject: false }).exitCode !== 0;

/**
 * Runs the CLI in this repository's dist/ with a state directory on a tmpfs of the given size:
 * it is built first out here (Nix does not run in the namespace), then copied onto the tmpfs.
 * With fillAt, the file system is filled (8 MiB left) as that line is printed. What the
 * directory and the disk hold afterwards is read before the namespace, and its tmpfs, end.
 */
async function startOnTmpfs(
  label: string,
  size: string,
  fillAt = '',
): Promise<{ code: number; err: string; filled: boolean; snapshots: string[]; left: string[] }> {
  const dir = dirs.add(seededStateDir(label));
  const env = cliEnv(dir, { K3S_VM_SNAPSHOT: '1' });
  const setup = await cli(['setup'], env);
  expect(setup.code, setup.err).toBe(0);
  const folder = mkdtempSync(join(tmpdir(), 'k3s-vm-faults-tmpfs-'));
  const driver = join(folder, 'driver.mjs');
  writeFileSync(
    driver,
    `import { execFileSync } from 'node:child_process';
import { existsSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import { run } from ${JSON.stringify(join(repoRoot, 'dist', 'adapters', 'cli', 'run.js'))};
const [dir, fillAt] = process.argv.slice(2);
let err = '';
let filled = false;
const io = (command) => ({
  stdout: { write: () => true },
  stderr: {
    write: (chunk) => {
      if (command === 'start') err += chunk;
      if (fillAt && !filled && chunk.includes(fillAt)) {
        filled = true;
        const fs = statfsSync(dir);
        execFileSync('fallocate', ['-l', String(fs.bavail * fs.bsize - 8 * 1024 * 1024), join(dir, 'filler')]);
      }
      return true;
    },
  },
  env: process.env,
  cwd: dir,
  interactive: false,
});
const code = await run(['start'], io('start'));
await run(['stop', '--force'], io('stop'));
const info = JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', join(dir, ${JSON.stringify(files.disk)})], { encoding: 'utf8' }));
const left = ${JSON.stringify([files.pid, files.runtime, files.kubeconfig, files.snapshotRecord])}.filter((name) => existsSync(join(dir, name)));
process.stdout.write(JSON.stringify({ code, err, filled, snapshots: (info.snapshots ?? []).map((entry) => entry.name), left }));
`,
  );
  const script = `stage=$(mktemp -d) && cp -a "$0/." "$stage/" && mount -t tmpfs -o size=${size} tmpfs "$0" && cp -a "$stage/." "$0/" && exec "$1" "$2" "$0" "$3"`;
  const namespaced = await execa(
    'unshare',
    ['--user', '--map-root-user', '--mount', 'sh', '-c', script, dir, process.execPath, driver, fillAt],
    {
      env,
      reject: false,
    },
  );
  expect(namespaced.exitCode, namespaced.stderr).toBe(0);
  expect(qemuProcessesUsing(dir)).toEqual([]);
  return JSON.parse(namespaced.stdout) as { code: number; err: string; filled: boolean; snapshots: string[]; left: string[] };
}
