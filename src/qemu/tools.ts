// The QEMU tools a run script stands for: its QEMU (the one the script names), qemu-img beside
// it (else on PATH) and QEMU's version. Found once per run script and PATH, and kept: a boot
// asks for them at its disk check, its snapshot plan, its save and its restore.
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import { K3sVmError } from '../errors.js';

export interface QemuTools {
  /** QEMU as the run script names it: a Nix store path, or `qemu-system-x86_64` to be found on PATH. */
  readonly qemu: string;
  /** qemu-img beside that QEMU, else the first on PATH; undefined when there is none. */
  readonly qemuImg: string | undefined;
  /** The first line of `qemu --version`, e.g. "QEMU emulator version 7.2.22 (Debian …)"; read on first use. */
  version(): Promise<string>;
}

const found = new Map<string, Promise<QemuTools>>();

/** The tools of runScript with PATH pathVariable; looked up again only when the script changes. */
export async function qemuToolsOf(runScript: string, pathVariable: string | undefined): Promise<QemuTools> {
  // A run script in the Nix store never changes; one written elsewhere (a test's) may.
  const changed = await stat(runScript).then(
    (info) => `${info.mtimeMs}:${info.size}`,
    () => 'missing',
  );
  const key = `${runScript}\0${pathVariable ?? ''}\0${changed}`;
  let tools = found.get(key);
  if (!tools) {
    tools = lookUp(runScript, pathVariable);
    found.set(key, tools);
  }
  return tools;
}

async function lookUp(runScript: string, pathVariable: string | undefined): Promise<QemuTools> {
  const qemu = qemuNamedBy(await readFile(runScript, 'utf8').catch(() => ''));
  const besideQemu = qemu.startsWith('/') ? [dirname(qemu)] : [];
  const folders = [...besideQemu, ...(pathVariable ?? '').split(':').filter(Boolean)];
  const qemuImg = folders.map((folder) => join(folder, 'qemu-img')).find((path) => existsSync(path));
  let version: Promise<string> | undefined;
  return {
    qemu,
    qemuImg,
    // A failed read is not kept: the next call tries again.
    version: () =>
      (version ??= readVersion(qemu, pathVariable).catch((error: unknown) => {
        version = undefined;
        throw error;
      })),
  };
}

/**
 * The QEMU a run script execs (a store path: the KVM probe and the snapshot's key use the VM's
 * own binary, even on hosts without QEMU on PATH), else qemu-system-x86_64. nixpkgs' nixos/lib/qemu-common.nix `qemuBinary` (read at
 * 04b74253) names bin/qemu-system-x86_64 for an x86_64 guest and falls back to bin/qemu-kvm,
 * which older releases used for every Linux host.
 */
export function qemuNamedBy(runScriptText: string): string {
  return /(\/nix\/store\/[^\s"'$]+\/bin\/(?:qemu-system-x86_64|qemu-kvm))(?![\w-])/.exec(runScriptText)?.[1] ?? 'qemu-system-x86_64';
}

async function readVersion(qemu: string, pathVariable: string | undefined): Promise<string> {
  const result = await execa(qemu, ['--version'], { reject: false, env: { PATH: pathVariable ?? '', LC_ALL: 'C' } });
  const line =
    String(result.stdout ?? '')
      .split('\n')[0]
      ?.trim() ?? '';
  if (result.exitCode !== 0 || !line)
    throw new K3sVmError('QEMU_START_FAILED', `could not read the version of ${qemu}`, { details: String(result.stderr ?? '') });
  return line;
}
