// What the fault-injection tests share: the CLI run in memory, a nix-build that records its calls.
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execaSync } from 'execa';
import { generateKeyPair } from '../../src/guest/keys.js';
import { run } from '../../src/adapters/cli/run.js';
import { files } from '../../src/state/files.js';
import { consumerEnv } from '../support/consumer.js';
import { freshStateDir, repoRoot } from '../support/test-guest.js';

/** One key pair for the whole suite: its state directories start with the same keys. */
const sharedKeys = join(tmpdir(), 'k3s-vm-faults-keys');

/** A new state directory that already has the suite's key pair. */
export function seededStateDir(label: string): string {
  if (!existsSync(join(sharedKeys, files.sshPublicKey))) {
    const staging = mkdtempSync(join(tmpdir(), 'k3s-vm-faults-keys-'));
    const pair = generateKeyPair('k3s-vm-faults');
    mkdirSync(join(staging, 'ssh'), { mode: 0o700 });
    writeFileSync(join(staging, files.sshKey), pair.privateKey, { mode: 0o600 });
    writeFileSync(join(staging, files.sshPublicKey), `${pair.publicKey}\n`, { mode: 0o600 });
    try {
      renameSync(staging, sharedKeys);
    } catch {
      // Another file of the suite made it first.
    }
  }
  const dir = freshStateDir(label);
  cpSync(join(sharedKeys, 'ssh'), join(dir, 'ssh'), { recursive: true });
  chmodSync(join(dir, 'ssh'), 0o700);
  return dir;
}

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

/** A nix-build that appends its arguments (one call a line) to a file and runs the real one. */
export function recordingNixBuild(): { path: string; calls(): string[][] } {
  const folder = mkdtempSync(join(tmpdir(), 'k3s-vm-faults-nix-'));
  const record = join(folder, 'calls');
  const path = join(folder, 'nix-build');
  const real = execaSync('sh', ['-c', 'command -v nix-build']).stdout.trim();
  writeFileSync(path, `#!/bin/sh\nfor a in "$@"; do printf '%s\\t' "$a"; done >> '${record}'\necho >> '${record}'\nexec '${real}' "$@"\n`);
  chmodSync(path, 0o755);
  return {
    path,
    calls: () =>
      existsSync(record)
        ? readFileSync(record, 'utf8')
            .split('\n')
            .filter(Boolean)
            .map((line) => line.split('\t').slice(0, -1))
        : [],
  };
}

/** The value of `--argstr NAME VALUE` in a recorded nix-build call. */
export function argstr(call: readonly string[], name: string): string | undefined {
  const at = call.findIndex((arg, i) => arg === '--argstr' && call[i + 1] === name);
  return at === -1 ? undefined : call[at + 2];
}
