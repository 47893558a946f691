// Nix expressions whose bin/run-<name>-vm is a small shell script standing in for QEMU, for
// failure paths a real guest does not produce on demand (exits at once, never answers SSH).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freshStateDir } from './test-guest.js';

/**
 * Writes an expression building run-<name>-vm from `body` (sh). The script keeps QEMU_OPTS on
 * its command line, as QEMU would, so the fixture recognises the process as its VM.
 */
export function scriptVm(label: string, body: string): string {
  const folder = join(freshStateDir(`script-${label}`), 'vm');
  mkdirSync(folder, { recursive: true });
  writeFileSync(join(folder, 'run.sh'), `#!/bin/sh\n${body}\n`);
  writeFileSync(
    join(folder, 'default.nix'),
    `{ name ? "k3s-vm", ... }:
builtins.derivation {
  name = "script-vm-\${name}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  script = ./run.sh;
  args = [ "-c" "/bin/mkdir -p $out/bin && /bin/cp $script $out/bin/run-\${name}-vm && /bin/chmod +x $out/bin/run-\${name}-vm" ];
}
`,
  );
  return folder;
}
