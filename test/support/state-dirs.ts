// State directories of the VMs a test file starts (all stopped after the file), and reading their pid files.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import type { StartOptions } from '../../src/cluster/index.js';
import { stopCluster } from '../../src/cluster/index.js';
import { files } from '../../src/state/files.js';
import { freshStateDir, testGuestOptions } from './test-guest.js';

export interface StateDirs {
  /** A new state directory, stopped after the file. */
  fresh(label: string): string;
  /** testGuestOptions() in a new state directory, stopped after the file. */
  options(label: string, extra?: Partial<StartOptions>): StartOptions & { dir: string };
  /** Registers a directory made elsewhere. */
  add(dir: string): string;
}

/** Call at the top of a test file: every directory it hands out has its VM force-stopped in afterAll. */
export function useStateDirs(): StateDirs {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const dir of dirs) await stopCluster({ dir, env: {}, force: true }).catch(() => undefined);
  });
  const add = (dir: string) => {
    dirs.push(dir);
    return dir;
  };
  return {
    add,
    fresh: (label) => add(freshStateDir(label)),
    options(label, extra = {}) {
      const options = testGuestOptions(label, extra);
      add(options.dir);
      return options;
    },
  };
}

/** The QEMU pid recorded in a state directory (throws when there is none). */
export function readQemuPid(dir: string): number {
  const pid = Number.parseInt(readFileSync(join(dir, files.pid), 'utf8'), 10);
  if (!Number.isSafeInteger(pid)) throw new Error(`no pid in ${join(dir, files.pid)}`);
  return pid;
}

/** The pid of a process that has already exited (and been reaped). */
export function deadPid(): number {
  const { pid } = spawnSync('true');
  if (pid === undefined) throw new Error('could not run true(1)');
  return pid;
}
