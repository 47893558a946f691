// Builds the VM with nix-build (parameters as arguments), or skips Nix when nothing changed.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { readdir, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { execa, type ExecaError } from 'execa';
import type { BuildParameters } from '../config/fingerprint.js';
import { hashOf } from '../config/fingerprint.js';
import { setting, settingName } from '../config/names.js';
import type { OptionKey } from '../config/option-table.js';
import { K3sVmError, throwIfAborted } from '../errors.js';
import type { Logger } from '../log.js';
import { NixProgress } from './progress.js';
import { files } from '../state/files.js';
import type { InstanceDir } from '../state/instance-dir.js';

export interface BuildOptions {
  /** Nix expression: a file, or a directory with default.nix. */
  readonly nix: string;
  readonly parameters: BuildParameters;
  /** The nix-build program. @default 'nix-build' */
  readonly nixBuild?: string;
  readonly logger: Logger;
  readonly signal?: AbortSignal | undefined;
  /** Build even if the inputs are unchanged. @default false */
  readonly force?: boolean;
  /** How the user named each option (the config's names), for the remedies of a failed build. @default the variables */
  readonly names?: Readonly<Partial<Record<OptionKey, string>>>;
}

export interface BuildResult {
  /** The store path of the build (what the out-link resolves to). */
  readonly storePath: string;
  /** The run-<name>-vm script inside it. */
  readonly runScript: string;
  /** Whether Nix was invoked (false when the last build was reused). */
  readonly invokedNix: boolean;
  /**
   * Whether Nix built or downloaded anything: false when it was not invoked, or when it only
   * evaluated and found every output in the store (another state directory's build of the same
   * options, say).
   */
  readonly builtOrFetched: boolean;
  readonly durationMs: number;
}

interface BuildStamp {
  readonly inputsHash: string;
  readonly storePath: string;
  readonly builtAt: string;
}

/** The nix-build arguments for the parameters: each one a function argument of the expression (nix/default.nix). */
export function nixBuildArgs(nix: string, outLink: string, parameters: BuildParameters): string[] {
  return [
    nix,
    '--out-link',
    outLink,
    '--argstr',
    'nixpkgsSpec',
    parameters.nixpkgs,
    '--argstr',
    'name',
    parameters.name,
    '--arg',
    'cpus',
    String(parameters.cpus),
    '--arg',
    'memoryMiB',
    String(parameters.memoryMiB),
    '--arg',
    'diskSizeMiB',
    String(parameters.diskSizeMiB),
    '--argstr',
    'k3sVersion',
    parameters.k3sVersion,
    '--arg',
    'offline',
    parameters.offline ? 'true' : 'false',
    '--argstr',
    'extraK3sFlagsJson',
    JSON.stringify(parameters.extraK3sFlags),
    '--argstr',
    'disableJson',
    JSON.stringify(parameters.disable),
    '--arg',
    'airgapImages',
    parameters.airgapImages ? 'true' : 'false',
    '--argstr',
    'extraModulesJson',
    JSON.stringify(parameters.extraModules),
    // Only when there are any: the same arguments as before the parameter existed otherwise.
    ...(parameters.preloadImages?.length ? ['--argstr', 'preloadImagesJson', JSON.stringify(parameters.preloadImages)] : []),
  ];
}

/**
 * Digest of the expression's source tree (the directory of a file expression): an edit to
 * any .nix file or anything it reads from there means a rebuild. Out-links and VCS folders
 * are skipped.
 */
export function expressionDigest(nix: string): string {
  const root = statSync(nix).isDirectory() ? nix : join(nix, '..');
  const hash = createHash('sha256');
  const walk = (folder: string, relative: string) => {
    for (const entry of readdirSync(folder, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      if (entry.name === '.git' || entry.name === 'node_modules' || entry.name.startsWith('result')) continue;
      const path = join(folder, entry.name);
      const rel = join(relative, entry.name);
      if (entry.isDirectory()) walk(path, rel);
      else if (entry.isFile()) hash.update(`${rel}\0`).update(readFileSync(path)).update('\0');
    }
  };
  walk(root, '');
  hash.update(`entry:${statSync(nix).isDirectory() ? 'default.nix' : nix.slice(root.length)}`);
  return hash.digest('hex');
}

/** Finds bin/run-*-vm in a build output. */
export async function findRunScript(storePath: string): Promise<string | undefined> {
  const bin = join(storePath, 'bin');
  const names = await readdir(bin).catch(() => [] as string[]);
  const script = names.find((name) => /^run-.+-vm$/.test(name));
  return script === undefined ? undefined : join(bin, script);
}

/** The build recorded in the state directory, if its out-link still resolves to a VM. */
export async function currentBuild(dir: InstanceDir): Promise<{ storePath: string; runScript: string } | undefined> {
  try {
    const storePath = await realpath(dir.file(files.buildLink));
    const runScript = await findRunScript(storePath);
    return runScript ? { storePath, runScript } : undefined;
  } catch {
    return undefined;
  }
}

export async function buildVm(dir: InstanceDir, options: BuildOptions): Promise<BuildResult> {
  const started = Date.now();
  const inputsHash = hashOf({ parameters: options.parameters, nix: options.nix, source: expressionDigest(options.nix) });
  const stamp = await dir.readJson<BuildStamp>(files.buildStamp).catch(() => undefined);
  const existing = await currentBuild(dir);
  if (!options.force && stamp?.inputsHash === inputsHash && existing && existing.storePath === stamp.storePath) {
    options.logger.debug(`build inputs unchanged (${inputsHash.slice(0, 12)}); reusing ${existing.storePath}`);
    return { ...existing, invokedNix: false, builtOrFetched: false, durationMs: Date.now() - started };
  }
  throwIfAborted(options.signal);
  options.logger.progress(`building the VM with Nix from ${options.nix} (the first build can take a while)`);
  const outLink = dir.file(files.buildLink);
  const nixBuild = options.nixBuild ?? 'nix-build';
  // Nix's structured log: progress counters to show, messages and build output to keep.
  const args = [...nixBuildArgs(options.nix, outLink, options.parameters), '--log-format', 'internal-json'];
  options.logger.debug(`${nixBuild} ${args.map((a) => (/\s/.test(a) ? JSON.stringify(a) : a)).join(' ')}`);

  const stderrLines: string[] = [];
  const keep = (text: string) => {
    for (const line of text.split('\n')) {
      stderrLines.push(line);
      if (stderrLines.length > 400) stderrLines.shift();
    }
  };
  const progress = new NixProgress();
  const status = statusReporter(options.logger);
  const child = execa(nixBuild, args, {
    cancelSignal: options.signal,
    stdin: 'ignore',
    reject: false,
    stripFinalNewline: true,
  });
  child.stderr?.setEncoding('utf8');
  let pending = '';
  const onLine = (line: string) => {
    const event = progress.read(line);
    if (!event) return;
    if (event.kind === 'progress') {
      if (progress.started) status.update(progress.summary());
    } else if (event.kind === 'build-log') {
      keep(event.text);
      options.logger.debug(`nix: ${event.text}`);
    } else {
      keep(event.text);
      // Errors end up in the thrown error; warnings and the plan ("these 120 derivations
      // will be built:") are worth a line; the lists of store paths and chatter are not.
      if (event.level === 1 || (event.level <= 3 && event.level > 0 && !event.text.startsWith('  '))) status.line(`nix: ${event.text}`);
      else options.logger.debug(`nix: ${event.text}`);
    }
  };
  child.stderr?.on('data', (chunk: string) => {
    pending += chunk;
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) onLine(line);
  });
  const result = await child;
  if (pending) onLine(pending);
  status.done(progress.started ? progress.summary() : undefined);
  throwIfAborted(options.signal);
  if (result.failed) throw nixError(nixBuild, result as unknown as ExecaError, stderrLines, options.names);

  const storePath = String(result.stdout).trim().split('\n').at(-1) ?? '';
  const resolved = await currentBuild(dir);
  if (!resolved) {
    throw new K3sVmError('RUN_SCRIPT_MISSING', `the Nix build ${storePath || outLink} has no bin/run-*-vm script`, {
      hint: `${options.nix} must build a NixOS VM (config.system.build.vm) or another output with bin/run-<name>-vm`,
    });
  }
  await dir.writeJson(files.buildStamp, {
    inputsHash,
    storePath: resolved.storePath,
    builtAt: new Date().toISOString(),
  } satisfies BuildStamp);
  const durationMs = Date.now() - started;
  options.logger.progress(
    progress.didWork
      ? `built ${resolved.storePath} in ${(durationMs / 1000).toFixed(1)} s`
      : `the VM ${resolved.storePath} was already in the Nix store (checked in ${(durationMs / 1000).toFixed(1)} s)`,
  );
  return { ...resolved, invokedNix: true, builtOrFetched: progress.didWork, durationMs };
}

/** Turns a failed nix-build into an error that says what to do. */
export function nixError(
  nixBuild: string,
  result: Pick<ExecaError, 'code' | 'exitCode' | 'shortMessage'>,
  stderrLines: readonly string[],
  names: Readonly<Partial<Record<OptionKey, string>>> = {},
): K3sVmError {
  const output = stderrLines.join('\n');
  if (result.code === 'ENOENT') {
    return new K3sVmError('NIX_MISSING', `Nix is not installed: ${nixBuild} was not found on PATH`, {
      hint: 'install Nix (https://nixos.org/download; on Debian or Ubuntu: apt-get install nix-bin), then run again',
    });
  }
  const tail = stderrLines
    .filter((l) => l.trim())
    .slice(-30)
    .join('\n');
  if (/file 'nixpkgs' was not found in the Nix search path/.test(output) || /cannot look up '<nixpkgs>'/.test(output)) {
    return new K3sVmError('NIXPKGS_MISSING', 'Nix cannot find <nixpkgs>: it is not on the Nix search path (NIX_PATH)', {
      details: tail,
      hint:
        `leave ${settingName(names, 'nixpkgs')} empty to build from the pinned nixpkgs, ` +
        'or add a nixpkgs channel (nix-channel --add https://nixos.org/channels/nixos-unstable nixpkgs && nix-channel --update) ' +
        'or point NIX_PATH at a nixpkgs checkout (NIX_PATH=nixpkgs=/path/to/nixpkgs)',
    });
  }
  const download = /unable to download '([^']+)'/.exec(output);
  if (download && /nixpkgs|nixexprs\.tar/i.test(download[1]!)) {
    return new K3sVmError('NIXPKGS_MISSING', `Nix could not download nixpkgs from ${download[1]}`, {
      details: tail,
      hint:
        'check the network connection, or build from a nixpkgs this machine already has: ' +
        `${setting(names, 'nixpkgs', "'<nixpkgs>'", '<nixpkgs>')} (the one on NIX_PATH) or ${setting(names, 'nixpkgs', '/path/to/nixpkgs')}`,
    });
  }
  const builderFailed =
    /builder for '[^']+' failed|Cannot build '[^']+'|build of '[^']+' failed|error: \d+ dependencies couldn't be built/.exec(output);
  if (builderFailed) {
    const drv = /'(\/nix\/store\/[^']+\.drv)'/.exec(builderFailed[0])?.[1];
    return new K3sVmError('NIX_BUILD_FAILED', `the Nix build of the VM failed (nix-build exited with ${result.exitCode})`, {
      details: tail,
      hint: drv ? `see the whole build log with: nix log ${drv}` : 'see the Nix output above',
    });
  }
  const firstError = stderrLines.findIndex((l) => l.startsWith('error:'));
  const message = firstError >= 0 ? stderrLines.slice(firstError).join('\n').trim() : tail;
  return new K3sVmError('NIX_EVAL_FAILED', `Nix could not evaluate the VM expression:\n${message || result.shortMessage}`, {
    hint: 'fix the Nix expression (or the setting whose value it names), then run again',
  });
}

/** How build progress reaches the user: one updating status line where the logger offers one, else occasional lines. */
interface StatusReporter {
  /** The counters changed. */
  update(summary: string): void;
  /** A message of its own line (above the status line). */
  line(message: string): void;
  /** The build ended; the final counters, if there were any. */
  done(summary: string | undefined): void;
}

/** Plain progress lines at most this often when the counters change (no terminal to redraw). */
const plainProgressIntervalMs = 10_000;

/**
 * A logger that can keep one line updated in place (a terminal): `status(line)` replaces the
 * line, `status('')` removes it. Optional; other loggers get plain progress lines.
 */
type StatusLogger = Logger & { status?: (line: string) => void };

function statusReporter(logger: StatusLogger): StatusReporter {
  const setStatus = logger.status?.bind(logger);
  if (setStatus) {
    let shown = '';
    return {
      update: (summary) => {
        if (summary !== shown) setStatus((shown = `nix: ${summary}`));
      },
      line: (message) => logger.progress(message),
      done: () => {
        if (shown) setStatus('');
      },
    };
  }
  let lastAt = 0;
  let last = '';
  return {
    update: (summary) => {
      const now = Date.now();
      if (summary === last || now - lastAt < plainProgressIntervalMs) return;
      lastAt = now;
      last = summary;
      logger.progress(`nix: ${summary}`);
    },
    line: (message) => logger.progress(message),
    done: (summary) => {
      if (summary && summary !== last) logger.progress(`nix: ${summary}`);
    },
  };
}

/** For status output: the store path the out-link points at, if any. */
export function buildPathOf(dir: InstanceDir): string | undefined {
  try {
    return realpathSync(dir.file(files.buildLink));
  } catch {
    return undefined;
  }
}
