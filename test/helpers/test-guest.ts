// Options that boot the test guest (fixtures/test-guest) in a fresh state directory.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { StartOptions } from '../../src/cluster/index.js';
import type { Logger } from '../../src/log.js';

export const repoRoot = resolve(import.meta.dirname, '..', '..');
export const testGuestNix = join(repoRoot, 'fixtures', 'test-guest');

/** A logger that keeps every line (and echoes it when K3S_VM_TEST_VERBOSE is set). */
export function recordingLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const push = (prefix: string) => (message: string) => {
    lines.push(`${prefix}${message}`);
    if (process.env['K3S_VM_TEST_VERBOSE']) process.stderr.write(`${prefix}${message}\n`);
  };
  return { lines, progress: push(''), warn: push('warning: '), debug: push('debug: ') };
}

/** A new state directory under the temporary directory (short, so the QMP socket fits inside). */
export function freshStateDir(label: string): string {
  return mkdtempSync(join(tmpdir(), `k3s-vm-${label}-`));
}

export function testGuestOptions(label: string, extra: Partial<StartOptions> = {}): StartOptions & { dir: string } {
  return {
    projectRoot: repoRoot,
    dir: freshStateDir(label),
    nix: testGuestNix,
    name: 'test-guest',
    memoryMiB: 1024,
    diskSizeMiB: 2048,
    accel: 'tcg',
    timeoutSeconds: 240,
    // Only what the run script needs: K3S_VM_* variables of the developer's shell stay out.
    env: { PATH: process.env['PATH'] },
    ...extra,
  };
}
