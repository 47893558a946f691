// The CLI run in this process with its output kept: `k3s-vm ARGS` without a child process.
import type { CliIo } from '../../src/adapters/cli/io.js';
import { run } from '../../src/adapters/cli/run.js';
import { consumerEnv } from './consumer.js';
import { repoRoot } from './test-guest.js';

export interface CliResult {
  readonly code: number;
  readonly out: string;
  readonly err: string;
}

/** The environment for the CLI on the test guest in a given state directory. */
export function cliEnv(dir: string, extra: Record<string, string> = {}): Record<string, string> {
  return { ...consumerEnv(dir), PATH: process.env['PATH'] ?? '/usr/bin:/bin', ...extra };
}

/** The CLI's input and output in memory: what it wrote is read back with out() and err(), and forgotten with clear(). */
export function memoryIo(
  env: Record<string, string | undefined> = {},
  cwd = repoRoot,
): CliIo & { out: () => string; err: () => string; clear: () => void } {
  let out = '';
  let err = '';
  return {
    stdout: { write: (chunk: string) => (out += chunk) },
    stderr: { write: (chunk: string) => (err += chunk) },
    env,
    cwd,
    interactive: false,
    out: () => out,
    err: () => err,
    clear: () => {
      out = '';
      err = '';
    },
  };
}

/** Runs the CLI in this process, as `k3s-vm ARGS` in cwd (the repository by default) would. */
export async function cli(argv: readonly string[], env: Record<string, string>, cwd = repoRoot): Promise<CliResult> {
  const io = memoryIo(env, cwd);
  const code = await run(argv, io);
  return { code, out: io.out(), err: io.err() };
}
