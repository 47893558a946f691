// Options that boot the test guest (fixtures/test-guest) in a fresh state directory, and a logger that keeps what it was told.
// Also imported by bench/run.ts under Node's type stripping: runtime imports from src/ are not allowed here.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { StartOptions } from '../../src/cluster/index.js';
import type { Logger } from '../../src/log.js';

export const repoRoot = resolve(import.meta.dirname, '..', '..');
export const testGuestNix = join(repoRoot, 'fixtures', 'test-guest');

/** Host wall-clock time in ms with sub-millisecond resolution (the clock bench/run.ts reads too). */
function hostNow(): number {
  return performance.timeOrigin + performance.now();
}

export interface RecordingLogger extends Logger {
  /** Every line, warnings prefixed `warning: `, debug lines `debug: `. */
  readonly lines: string[];
  /** When each line arrived (hostNow()), index for index with `lines`. */
  readonly times: number[];
}

/** A logger that keeps every line (and echoes it when K3S_VM_TEST_VERBOSE is set). */
export function recordingLogger(): RecordingLogger {
  const lines: string[] = [];
  const times: number[] = [];
  const push = (prefix: string) => (message: string) => {
    times.push(hostNow());
    lines.push(`${prefix}${message}`);
    if (process.env['K3S_VM_TEST_VERBOSE']) process.stderr.write(`${prefix}${message}\n`);
  };
  return { lines, times, progress: push(''), warn: push('warning: '), debug: push('debug: ') };
}

/** A new state directory under the temporary directory (short, so the QMP socket fits inside). */
export function freshStateDir(label: string): string {
  return mkdtempSync(join(tmpdir(), `k3s-vm-${label}-`));
}

/**
 * The environment a VM started by a test reads and hands its run script: PATH, and the cache
 * directory vitest.config.ts points at (so the KVM probe is cached once per run, never in the
 * developer's home). K3S_VM_* variables of the developer's shell stay out.
 */
export function testGuestEnv(): Record<string, string | undefined> {
  return { PATH: process.env['PATH'], XDG_CACHE_HOME: process.env['XDG_CACHE_HOME'] };
}

export function testGuestOptions(label: string, extra: Partial<StartOptions> = {}): StartOptions & { dir: string } {
  return {
    projectRoot: repoRoot,
    dir: freshStateDir(label),
    nix: testGuestNix,
    name: 'test-guest',
    // One virtual CPU: under emulation each is a host thread, and the suite boots two guests at
    // a time on two cores.
    cpus: 1,
    memoryMiB: 1024,
    diskSizeMiB: 2048,
    accel: 'tcg',
    // Well inside the test timeout (180 s), so a guest that never gets ready fails with the
    // readiness error and the serial log rather than a bare test timeout.
    timeoutSeconds: 120,
    env: testGuestEnv(),
    ...extra,
  };
}
