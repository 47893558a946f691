// A full disk and other I/O errors reach the user as a K3sVmError with the path and a hint, never a stack trace.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa, execaSync } from 'execa';
import { describe, expect, it } from 'vitest';
import { files } from '../../src/state/files.js';
import { freshStateDir, repoRoot } from '../support/test-guest.js';
import { cli, cliEnv } from '../support/cli.js';

/** A mount namespace with a tiny tmpfs needs no root where user namespaces are allowed. */
const tmpfsUnavailable = execaSync('unshare', ['--user', '--map-root-user', '--mount', 'true'], { reject: false }).exitCode !== 0;

describe('I/O errors in the state directory', () => {
  it('ENOSPC and a file in the way are reported with code, path and hint', async () => {
    // Something in the way: the key's folder is a file.
    const dir = freshStateDir('faults-io');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'ssh'), 'not a folder');
    const blocked = await cli(['setup'], cliEnv(dir));
    expect(blocked.code).toBe(1);
    expect(blocked.err).toMatch(new RegExp(`^error: could not (read|write) ${join(dir, files.sshKey)}`, 'm'));
    expect(blocked.err).toMatch(/^hint: /m);
    expect(blocked.err).not.toMatch(/^\s+at /m);

    if (tmpfsUnavailable) {
      console.log('skipped the ENOSPC case: unshare --user --mount is not allowed on this host');
      return;
    }
    // A full file system: the state directory on a one-page tmpfs, which .gitignore fills.
    const full = freshStateDir('faults-enospc');
    const script = `mount -t tmpfs -o size=4k tmpfs '${full}' && exec node '${join(repoRoot, 'dist', 'adapters', 'cli', 'bin.js')}' setup`;
    const run = await execa('unshare', ['--user', '--map-root-user', '--mount', 'sh', '-c', script], {
      env: cliEnv(full),
      reject: false,
      all: true,
    });
    expect(run.exitCode, run.all).toBe(1);
    expect(run.all).toMatch(/^error: could not write .*: no space left on the device \(ENOSPC\)/m);
    expect(run.all).toMatch(/^hint: free some space on the file system that holds /m);
    expect(run.all).not.toMatch(/^\s+at /m);
  });

  it('a read-only state directory is named, and so is the setting to change, as the user gave it', async (context) => {
    if (tmpfsUnavailable) {
      console.log('skipped: unshare --user --mount is not allowed on this host');
      return context.skip();
    }
    // The state directory exists on a tmpfs that is then made read-only: its first write fails with EROFS.
    const mount = freshStateDir('faults-erofs');
    const state = join(mount, 'state');
    const bin = join(repoRoot, 'dist', 'adapters', 'cli', 'bin.js');
    const readOnly = `mount -t tmpfs tmpfs '${mount}' && mkdir '${state}' && mount -o remount,ro '${mount}'`;
    const inside = (args: string) =>
      execa('unshare', ['--user', '--map-root-user', '--mount', 'sh', '-c', `${readOnly} && exec node '${bin}' ${args}`], {
        env: cliEnv(state),
        reject: false,
        all: true,
      });
    const byVariable = await inside('setup');
    expect(byVariable.exitCode, byVariable.all).toBe(1);
    expect(byVariable.all).toMatch(new RegExp(`^error: could not create the state directory ${state}: EROFS`, 'm'));
    expect(byVariable.all).toMatch(/^hint: .* is on a read-only file system: choose another state directory \(K3S_VM_DIR\)$/m);
    const byFlag = await inside(`setup --dir '${state}'`);
    expect(byFlag.exitCode, byFlag.all).toBe(1);
    expect(byFlag.all).toMatch(/^hint: .* is on a read-only file system: choose another state directory \(--dir\)$/m);
  });
});
