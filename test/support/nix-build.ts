// A nix-build that counts its calls and keeps the arguments of the last one; it runs the real nix-build.
// Also imported by bench/run.ts under Node's type stripping.
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface CountingNixBuild {
  /** The executable to pass as the `nixBuild` option. */
  readonly path: string;
  count(): number;
  lastArgs(): string[];
}

/** Writes the counting wrapper into `folder`. */
export function countingNixBuild(folder: string): CountingNixBuild {
  const real = execFileSync('sh', ['-c', 'command -v nix-build'], { encoding: 'utf8' }).trim();
  if (!real) throw new Error('nix-build is not on PATH');
  const calls = join(folder, 'nix-calls');
  const args = join(folder, 'nix-last-args');
  const path = join(folder, 'nix-build');
  writeFileSync(path, ['#!/bin/sh', `echo call >>'${calls}'`, `printf '%s\\0' "$@" >'${args}'`, `exec '${real}' "$@"`, ''].join('\n'));
  chmodSync(path, 0o755);
  return {
    path,
    count: () => (existsSync(calls) ? readFileSync(calls, 'utf8').split('\n').filter(Boolean).length : 0),
    lastArgs: () => readFileSync(args, 'utf8').split('\0').slice(0, -1),
  };
}
