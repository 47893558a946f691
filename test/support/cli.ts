// The CLI run in this process with its output kept: `k3s-vm ARGS` without a child process.
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

/** Runs the CLI in this process, as `k3s-vm ARGS` in the repository would. */
export async function cli(argv: readonly string[], env: Record<string, string>): Promise<CliResult> {
  let out = '';
  let err = '';
  const io = {
    stdout: { write: (chunk: string) => (out += chunk) },
    stderr: { write: (chunk: string) => (err += chunk) },
    env,
    cwd: repoRoot,
    interactive: false,
  };
  const code = await run(argv, io);
  return { code, out, err };
}
