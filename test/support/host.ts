// What this host has: nixpkgs on the Nix search path.
import { execaSync } from 'execa';

export function nixpkgsPath(): string | undefined {
  const result = execaSync('nix-instantiate', ['--find-file', 'nixpkgs'], { reject: false });
  return result.exitCode === 0 ? String(result.stdout).trim() : undefined;
}
