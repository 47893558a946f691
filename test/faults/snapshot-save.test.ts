// Faults while the ready VM is saved (K3S_VM_SNAPSHOT): QEMU killed during the save.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { run } from '../../src/adapters/cli/run.js';
import { files } from '../../src/state/files.js';
import { qemuProcessesUsing } from '../helpers/consumer.js';
import { readQemuPid, useStateDirs } from '../helpers/state-dirs.js';
import { repoRoot } from '../helpers/test-guest.js';
import { cli, cliEnv, seededStateDir } from './helpers.js';

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
});
