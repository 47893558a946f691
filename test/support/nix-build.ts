// A nix-build that records each call's arguments and runs the real nix-build: how a test or the
// benchmark sees whether, and with what, k3s-vm invoked Nix. Also imported by bench/run.ts under
// Node's type stripping.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface RecordingNixBuild {
  /** The executable to pass as the `nixBuild` option (or K3S_VM_NIX_BUILD). */
  readonly path: string;
  /** Every call's arguments, oldest first. */
  calls(): string[][];
  count(): number;
  /** The last call's arguments (none before the first call). */
  lastArgs(): string[];
}

/** Writes the wrapper into `folder` (a new temporary one by default). */
export function recordingNixBuild(folder = mkdtempSync(join(tmpdir(), 'k3s-vm-nix-'))): RecordingNixBuild {
  const real = execFileSync('sh', ['-c', 'command -v nix-build'], { encoding: 'utf8' }).trim();
  if (!real) throw new Error('nix-build is not on PATH');
  const record = join(folder, 'nix-calls');
  mkdirSync(record, { recursive: true });
  const path = join(folder, 'nix-build');
  // One file per call, named by the time it was made (concurrent calls each get their own),
  // each argument followed by a NUL: an argument holds anything but a NUL.
  writeFileSync(
    path,
    ['#!/bin/sh', `call=$(mktemp "${record}/$(date +%s%N)-XXXXXX")`, `printf '%s\\0' "$@" >"$call"`, `exec '${real}' "$@"`, ''].join('\n'),
  );
  chmodSync(path, 0o755);
  const calls = () =>
    readdirSync(record)
      .sort()
      .map((name) => readFileSync(join(record, name), 'utf8').split('\0').slice(0, -1));
  return { path, calls, count: () => calls().length, lastArgs: () => calls().at(-1) ?? [] };
}

/** The value of `--argstr NAME VALUE` in a recorded nix-build call. */
export function argstr(call: readonly string[], name: string): string | undefined {
  const at = call.findIndex((arg, i) => arg === '--argstr' && call[i + 1] === name);
  return at === -1 ? undefined : call[at + 2];
}
