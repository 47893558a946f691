// The CLI's commands: each a thin wrapper over one cluster operation.
import { readFile, stat } from 'node:fs/promises';
import type { ParseArgsConfig } from 'node:util';
import {
  applyManifests,
  buildCluster,
  clusterStatus,
  deleteClusterSnapshot,
  deleteNamedSnapshot,
  listSnapshots,
  rewindCluster,
  saveNamedSnapshot,
  execInCluster,
  importImages,
  listImages,
  kubectlTarget,
  loadKubeConfig,
  resetCluster,
  runningCluster,
  sshClientArgs,
  startCluster,
  stopCluster,
  type ClusterOptions,
} from '../../cluster/index.js';
import { K3sVmError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { printDoctor } from './doctor.js';
import { formatBytes, formatDuration } from './format.js';
import { colours, exitCodes, type CliIo } from './io.js';
import { followFile, pipeRange, spawnInherit } from './processes.js';

export interface CommandContext {
  readonly io: CliIo;
  /** The command's own flags (--force, --json, …). */
  readonly values: Record<string, string | boolean | undefined>;
  readonly positionals: string[];
  /** Config flags, environment and working directory, ready for the cluster API. */
  readonly options: ClusterOptions;
  readonly logger: Logger;
}

export interface Command {
  readonly summary: string;
  readonly usage: string;
  readonly options?: ParseArgsConfig['options'];
  /** Takes every argument after the command verbatim (kubectl). */
  readonly passThrough?: boolean;
  /** Takes positional arguments (after --). */
  readonly positionals?: boolean;
  /** Handles Ctrl-C itself (or hands the terminal to another program). */
  readonly ownsSigint?: boolean;
  run(context: CommandContext): Promise<number>;
}

/** Whether a kubeconfig parses and names a server and a user. */
function usableKubeconfig(text: string): boolean {
  try {
    const kc = loadKubeConfig(text);
    return kc.getCurrentCluster()?.server !== undefined && kc.getCurrentUser() !== null;
  } catch {
    return false;
  }
}

/** A mistake in how the command was called: exit code 2 and the usage line. */
export class UsageError extends Error {}

export const commands: Record<string, Command> = {
  setup: {
    summary: 'build the VM image with Nix (nothing is started)',
    usage: 'setup [--force]',
    options: { force: { type: 'boolean' } },
    async run({ io, values, options }) {
      const build = await buildCluster({ ...options, force: Boolean(values['force']) });
      io.stdout.write(`${build.storePath}\n`);
      return exitCodes.ok;
    },
  },
  start: {
    summary: 'build if needed, boot, wait until K3s is ready; the VM stays up',
    usage: 'start',
    async run({ io, options }) {
      const cluster = await startCluster({ ...options, keep: true });
      io.stdout.write(`${cluster.kubeconfigPath}\n`);
      await cluster.stop();
      return exitCodes.ok;
    },
  },
  stop: {
    summary: 'power the VM off (graceful, then forced); the disk is kept',
    usage: 'stop [--force]',
    options: { force: { type: 'boolean' } },
    async run({ values, options, logger }) {
      const result = await stopCluster({ ...options, force: Boolean(values['force']) });
      if (result.previous === 'stopped') logger.progress('the VM is not running');
      return exitCodes.ok;
    },
  },
  status: {
    summary: 'running / stopped / broken, with ports, accelerator, uptime and readiness',
    usage: 'status [--json]',
    options: { json: { type: 'boolean' } },
    async run({ io, values, options }) {
      const status = await clusterStatus({ ...options, probeApi: true });
      const ready = status.apiReady ?? false;
      const runtime = status.runtime;
      const report = {
        name: status.existing?.context ?? status.config.name,
        cluster: status.existing ? `existing (${status.existing.server})` : 'vm',
        state: status.state,
        reasons: status.reasons,
        pid: status.pid ?? null,
        accel: runtime?.accel ?? null,
        apiPort: runtime?.apiPort ?? null,
        sshPort: runtime?.sshPort ?? null,
        apiServerUrl: runtime ? `https://127.0.0.1:${runtime.apiPort}` : null,
        startedAt: runtime?.startedAt ?? null,
        uptimeSeconds: runtime ? Math.round((Date.now() - Date.parse(runtime.startedAt)) / 1000) : null,
        kept: runtime?.keep ?? null,
        users: status.users,
        k3sReady: ready,
        kubeconfigPath: status.kubeconfigPath ?? null,
        diskBytes: status.diskBytes ?? null,
        snapshot: status.snapshot ?? null,
        buildPath: status.buildPath ?? null,
        dir: status.config.dir,
      };
      if (values['json']) {
        io.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      } else {
        const c = colours(io);
        const state = status.state === 'running' ? c.green('running') : status.state === 'broken' ? c.red('broken') : c.yellow('stopped');
        const lines = [`${report.name}: ${state}`];
        for (const reason of status.reasons) lines.push(`  reason:     ${reason}`);
        if (status.existing) {
          lines.push(`  cluster:    existing, context ${status.existing.context}`);
          lines.push(`  API:        ${status.existing.server}${ready ? '' : ' (not answering /readyz)'}`);
          lines.push(`  kubeconfig: ${status.config.kubeconfig}`);
          io.stdout.write(`${lines.join('\n')}\n`);
          return status.state === 'running' ? exitCodes.ok : exitCodes.notRunning;
        }
        if (runtime) {
          lines.push(`  pid:        ${report.pid}`);
          lines.push(`  accel:      ${runtime.accel === 'kvm' ? 'KVM' : 'TCG (software emulation)'}`);
          lines.push(`  API:        ${report.apiServerUrl}${ready ? '' : ' (not answering /readyz)'}`);
          lines.push(`  SSH:        127.0.0.1:${runtime.sshPort}`);
          lines.push(`  uptime:     ${formatDuration(Date.now() - Date.parse(runtime.startedAt))}${runtime.keep ? ' (kept)' : ''}`);
          lines.push(`  K3s ready:  ${ready ? 'yes' : 'no'}`);
          if (report.kubeconfigPath) lines.push(`  kubeconfig: ${report.kubeconfigPath}`);
        }
        lines.push(`  disk:       ${report.diskBytes === null ? 'none yet' : formatBytes(report.diskBytes)}`);
        if (status.snapshot)
          lines.push(
            `  snapshot:   ${formatBytes(status.snapshot.vmStateBytes)} of VM state in the disk, saved ${status.snapshot.savedAt}`,
          );
        lines.push(`  build:      ${report.buildPath ?? 'not built yet (k3s-vm setup)'}`);
        lines.push(`  state dir:  ${report.dir}`);
        io.stdout.write(`${lines.join('\n')}\n`);
      }
      return status.state === 'running' ? exitCodes.ok : exitCodes.notRunning;
    },
  },
  reset: {
    summary: "delete the VM's disk (cluster state); keys and build are kept",
    usage: 'reset [--force]',
    options: { force: { type: 'boolean' } },
    async run({ values, options }) {
      await resetCluster({ ...options, force: Boolean(values['force']) });
      return exitCodes.ok;
    },
  },
  snapshot: {
    summary:
      'snapshots in the disk: list them (ls), save the running VM (save NAME), return it to one (restore NAME), delete one (rm [NAME])',
    usage: 'snapshot [ls] | snapshot save NAME | snapshot restore NAME | snapshot rm [NAME]',
    positionals: true,
    async run({ io, positionals, options }) {
      const [action = 'ls', name, ...rest] = positionals;
      if (rest.length > 0) throw new UsageError(`snapshot ${action} takes one name at most`);
      const needsName = (verb: string): string => {
        if (name === undefined) throw new UsageError(`snapshot ${verb} needs a name: k3s-vm snapshot ${verb} NAME`);
        return name;
      };
      if (action === 'save') {
        await saveNamedSnapshot(needsName('save'), options);
        return exitCodes.ok;
      }
      if (action === 'restore') {
        await rewindCluster({ ...options, to: needsName('restore') });
        return exitCodes.ok;
      }
      if (action === 'rm') {
        // Without a name: the ready-state snapshot, as before named snapshots existed.
        if (name === undefined) await deleteClusterSnapshot(options);
        else await deleteNamedSnapshot(name, options);
        return exitCodes.ok;
      }
      if (action !== 'ls') throw new UsageError(`snapshot takes ls, save, restore or rm, not ${action}`);
      if (name !== undefined) throw new UsageError('snapshot ls takes no name');
      const [entries, status] = await Promise.all([listSnapshots(options), clusterStatus(options)]);
      if (entries.length === 0) {
        io.stdout.write(`no snapshot${status.config.snapshot ? '' : ` (${status.config.names.snapshot} is off)`}\n`);
        return exitCodes.ok;
      }
      const width = Math.max(...entries.map((entry) => entry.name.length));
      for (const entry of entries) {
        io.stdout.write(
          `${entry.name.padEnd(width)}  ${entry.savedAt}  ${formatBytes(entry.vmStateBytes)}  ${entry.storePath}${entry.automatic ? '  (automatic)' : ''}\n`,
        );
      }
      return exitCodes.ok;
    },
  },
  rewind: {
    summary: 'return the running VM to its snapshot without a reboot (what was created since is gone); refused while a test run uses it',
    usage: 'rewind [NAME]',
    positionals: true,
    async run({ positionals, options }) {
      if (positionals.length > 1) throw new UsageError('rewind takes one snapshot name at most');
      await rewindCluster({ ...options, ...(positionals[0] === undefined ? {} : { to: positionals[0] }) });
      return exitCodes.ok;
    },
  },
  ssh: {
    summary: 'a root shell in the VM, or one command with its exit code (ssh -- command)',
    usage: 'ssh [-- command …]',
    positionals: true,
    ownsSigint: true,
    async run({ io, positionals, options }) {
      if (positionals.length > 0) {
        // Standard input goes to the command, as with OpenSSH and kubectl exec -i.
        const result = await execInCluster(positionals, { ...options, stdin: io.stdin });
        io.stdin?.pause();
        io.stdout.write(result.stdout);
        io.stderr.write(result.stderr);
        return result.exitCode ?? exitCodes.failure;
      }
      if (!io.interactive) throw new UsageError('an interactive shell needs a terminal; give a command: k3s-vm ssh -- COMMAND');
      return spawnInherit(
        'ssh',
        await sshClientArgs(options),
        io,
        'ssh (OpenSSH client) is not installed; install it, or run one command with: k3s-vm ssh -- COMMAND',
      );
    },
  },
  kubeconfig: {
    summary: "print the cluster's kubeconfig (or its path with --path)",
    usage: 'kubeconfig [--path]',
    options: { path: { type: 'boolean' } },
    async run({ io, values, options }) {
      const status = await runningCluster(options);
      if (!status.kubeconfigPath) {
        throw new K3sVmError('NOT_READY', 'the VM runs but has no kubeconfig yet (it did not become ready)', {
          hint: 'k3s-vm logs shows the serial console',
        });
      }
      const text = await readFile(status.kubeconfigPath, 'utf8');
      if (!usableKubeconfig(text)) {
        throw new K3sVmError(
          'KUBECONFIG_INVALID',
          `${status.kubeconfigPath} is damaged (${text.trim() === '' ? 'empty' : 'not a kubeconfig with a cluster and a user'}); the VM itself is running`,
          {
            hint: 'fetch it again from the VM with: npx k3s-vm start (attaches to the running VM; nothing is rebooted)',
          },
        );
      }
      io.stdout.write(values['path'] ? `${status.kubeconfigPath}\n` : text);
      return exitCodes.ok;
    },
  },
  logs: {
    summary: "the VM's serial console (--follow to keep reading)",
    usage: 'logs [--follow]',
    options: { follow: { type: 'boolean', short: 'f' } },
    ownsSigint: true,
    async run({ io, values, options }) {
      const path = (await clusterStatus(options)).serialLogPath;
      const size = await stat(path)
        .then((s) => s.size)
        .catch(() => undefined);
      if (size === undefined)
        throw new K3sVmError('NOT_RUNNING', `there is no serial log yet (${path})`, { hint: 'start the VM first: npx k3s-vm start' });
      await pipeRange(path, 0, size, io);
      if (!values['follow']) return exitCodes.ok;
      return followFile(path, size, io);
    },
  },
  kubectl: {
    summary: "kubectl with the cluster's kubeconfig (k3s-vm kubectl get pods -A)",
    usage: 'kubectl ARGS…',
    passThrough: true,
    ownsSigint: true,
    async run({ io, positionals, options }) {
      const target = await kubectlTarget(options);
      try {
        return await spawnInherit(
          'kubectl',
          [...target.args, ...positionals],
          { ...io, env: { ...io.env, KUBECONFIG: target.kubeconfigPath } },
          'kubectl is not installed: see https://kubernetes.io/docs/tasks/tools/ (or use k3s-vm ssh -- k3s kubectl …)',
        );
      } finally {
        await target.cleanup();
      }
    },
  },
  images: {
    summary: 'import image archives into the running VM (images import ARCHIVE…), or list its images (images ls)',
    usage: 'images import [--force] ARCHIVE… | images ls',
    options: { force: { type: 'boolean' } },
    positionals: true,
    async run({ io, values, positionals, options }) {
      const [verb, ...paths] = positionals;
      if (verb === 'ls' || verb === 'list') {
        if (paths.length > 0) throw new UsageError('images ls takes no arguments');
        const names = await listImages(options);
        io.stdout.write(names.map((name) => `${name}\n`).join(''));
        return exitCodes.ok;
      }
      if (verb !== 'import')
        throw new UsageError(
          verb === undefined ? 'say what to do: images import ARCHIVE… or images ls' : `unknown images command "${verb}": use import or ls`,
        );
      if (paths.length === 0)
        throw new UsageError(
          'images import needs at least one archive (docker save, podman save, nixpkgs dockerTools, OCI; .tar or .tar.gz)',
        );
      await importImages(paths, { ...options, force: Boolean(values['force']) });
      return exitCodes.ok;
    },
  },
  apply: {
    summary: 'server-side apply manifest files and directories to the cluster (only changed files on the VM; --force for all)',
    usage: 'apply [--force] [--wait-for-rollout] PATH…',
    options: { force: { type: 'boolean' } },
    positionals: true,
    async run({ positionals, values, options }) {
      if (positionals.length === 0) throw new UsageError('apply needs at least one manifest file or directory');
      await applyManifests(positionals, { ...options, force: Boolean(values['force']) });
      return exitCodes.ok;
    },
  },
  doctor: {
    summary: 'check Nix, nixpkgs, QEMU, KVM, ports and the state directory',
    usage: 'doctor',
    async run({ io, options }) {
      return printDoctor(options, io);
    },
  },
};
