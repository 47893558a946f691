// The k3s-vm command line: thin commands over the library; run(argv, io) returns an exit code.
import { spawn } from 'node:child_process';
import { createReadStream, readFileSync, watch } from 'node:fs';
import { stat } from 'node:fs/promises';
import { constants } from 'node:os';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { buildCluster, clusterStatus, resetCluster, startCluster, stopCluster, type ClusterOptions } from '../../cluster/cluster.js';
import type { K3sVmOptions } from '../../config/options.js';
import { resolveConfig } from '../../config/resolve-config.js';
import { K3sVmError } from '../../errors.js';
import { GuestSsh } from '../../guest/ssh.js';
import { createStreamLogger, type Logger } from '../../log.js';
import { files } from '../../state/files.js';
import { InstanceDir } from '../../state/instance-dir.js';
import { colours, exitCodes, type CliIo } from './io.js';
import { doctor } from './doctor.js';

const packageJson = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };

/** Flags every command takes; each matches a K3S_VM_* variable. */
const commonOptions = {
  dir: { type: 'string' },
  name: { type: 'string' },
  cpus: { type: 'string' },
  memory: { type: 'string' },
  'disk-size': { type: 'string' },
  accel: { type: 'string' },
  'api-port': { type: 'string' },
  'ssh-port': { type: 'string' },
  timeout: { type: 'string' },
  nix: { type: 'string' },
  k3s: { type: 'string' },
  debug: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

interface Command {
  readonly summary: string;
  readonly usage: string;
  readonly options?: ParseArgsConfig['options'];
  /** Takes every argument after the command verbatim (kubectl). */
  readonly passThrough?: boolean;
  run(context: CommandContext): Promise<number>;
}

interface CommandContext {
  readonly io: CliIo;
  readonly values: Record<string, string | boolean | undefined>;
  readonly positionals: string[];
  readonly options: ClusterOptions;
  readonly logger: Logger;
}

class UsageError extends Error {}

function numberFlag(values: CommandContext['values'], flag: string): number | undefined {
  const value = values[flag];
  if (value === undefined) return undefined;
  // Bad numbers reach the config layer as NaN-free strings so its message names the flag.
  return /^\d+$/.test(String(value)) ? Number(value) : (String(value) as unknown as number);
}

function configFromFlags(values: CommandContext['values']): K3sVmOptions {
  const options: Record<string, unknown> = {
    dir: values['dir'],
    name: values['name'],
    cpus: numberFlag(values, 'cpus'),
    memoryMiB: numberFlag(values, 'memory'),
    diskSizeMiB: numberFlag(values, 'disk-size'),
    accel: values['accel'],
    apiPort: numberFlag(values, 'api-port'),
    sshPort: numberFlag(values, 'ssh-port'),
    timeoutSeconds: numberFlag(values, 'timeout'),
    nix: values['nix'],
    k3sVersion: values['k3s'],
    debug: values['debug'],
  };
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as K3sVmOptions;
}

async function requireRunning(options: ClusterOptions) {
  const status = await clusterStatus(options);
  if (status.state !== 'running' || !status.runtime) {
    throw new K3sVmError('NOT_RUNNING', status.state === 'broken' ? `the VM is broken: ${status.reasons.join('; ')}` : 'the VM is not running', {
      hint: 'start it with: npx k3s-vm start',
    });
  }
  return { status, runtime: status.runtime };
}

function formatDuration(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

const commands: Record<string, Command> = {
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
        name: status.config.name,
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
  ssh: {
    summary: 'a root shell in the VM, or one command with its exit code (ssh -- command)',
    usage: 'ssh [-- command …]',
    async run({ io, positionals, options }) {
      const { runtime } = await requireRunning(options);
      const config = resolveConfig(options, options.env, options.cwd);
      const dir = new InstanceDir(config.dir);
      const privateKey = await dir.readText(files.sshKey);
      if (!privateKey) throw new K3sVmError('STATE_INVALID', `the instance key ${dir.file(files.sshKey)} is missing`, { hint: 'run k3s-vm reset --force and start again' });
      if (positionals.length > 0) {
        const ssh = await GuestSsh.connect({ port: runtime.sshPort, privateKey });
        try {
          const result = await ssh.exec(positionals.join(' '));
          io.stdout.write(result.stdout);
          io.stderr.write(result.stderr);
          return result.exitCode ?? exitCodes.failure;
        } finally {
          ssh.close();
        }
      }
      if (!io.interactive) throw new UsageError('an interactive shell needs a terminal; give a command: k3s-vm ssh -- COMMAND');
      return spawnInherit(
        'ssh',
        ['-i', dir.file(files.sshKey), '-p', String(runtime.sshPort), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', 'root@127.0.0.1'],
        io,
        'ssh (OpenSSH client) is not installed; install it, or run one command with: k3s-vm ssh -- COMMAND',
      );
    },
  },
  kubeconfig: {
    summary: "print the cluster's kubeconfig (or its path with --path)",
    usage: 'kubeconfig [--path]',
    options: { path: { type: 'boolean' } },
    async run({ io, values, positionals, options }) {
      const { status } = await requireRunning(options);
      if (!status.kubeconfigPath) throw new K3sVmError('NOT_READY', 'the VM runs but has no kubeconfig yet (it did not become ready)', { hint: 'k3s-vm logs shows the serial console' });
      io.stdout.write(values['path'] ? `${status.kubeconfigPath}\n` : readFileSync(status.kubeconfigPath, 'utf8'));
      return exitCodes.ok;
    },
  },
  logs: {
    summary: "the VM's serial console (--follow to keep reading)",
    usage: 'logs [--follow]',
    options: { follow: { type: 'boolean', short: 'f' } },
    async run({ io, values, options }) {
      const config = resolveConfig(options, options.env, options.cwd);
      const path = new InstanceDir(config.dir).file(files.serialLog);
      const size = await stat(path).then((s) => s.size).catch(() => undefined);
      if (size === undefined) throw new K3sVmError('NOT_RUNNING', `there is no serial log yet (${path})`, { hint: 'start the VM first: npx k3s-vm start' });
      await pipeRange(path, 0, size, io);
      if (!values['follow']) return exitCodes.ok;
      return followFile(path, size, io);
    },
  },
  kubectl: {
    summary: "kubectl with the cluster's kubeconfig (k3s-vm kubectl get pods -A)",
    usage: 'kubectl ARGS…',
    passThrough: true,
    async run({ io, positionals, options }) {
      const { status } = await requireRunning(options);
      return spawnInherit('kubectl', positionals, { ...io, env: { ...io.env, KUBECONFIG: status.kubeconfigPath ?? '' } }, 'kubectl is not installed: see https://kubernetes.io/docs/tasks/tools/ (or use k3s-vm ssh -- k3s kubectl …)');
    },
  },
  doctor: {
    summary: 'check Nix, nixpkgs, QEMU, KVM, ports and the state directory',
    usage: 'doctor',
    async run({ io, options }) {
      const config = resolveConfig(options, options.env, options.cwd);
      return doctor(config, io);
    },
  },
};

function spawnInherit(command: string, args: string[], io: CliIo, missingHint: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: io.interactive ? 'inherit' : ['inherit', 'pipe', 'pipe'], env: { ...io.env } as NodeJS.ProcessEnv, cwd: io.cwd });
    child.stdout?.on('data', (chunk: Buffer) => io.stdout.write(chunk.toString('utf8')));
    child.stderr?.on('data', (chunk: Buffer) => io.stderr.write(chunk.toString('utf8')));
    child.once('error', (error: NodeJS.ErrnoException) =>
      reject(error.code === 'ENOENT' ? new K3sVmError('TOOL_MISSING', `${command} was not found on PATH`, { hint: missingHint }) : error),
    );
    child.once('close', (code, signal) => resolve(code ?? (signal ? 128 + (constants.signals[signal] ?? 0) : exitCodes.failure)));
  });
}

function pipeRange(path: string, start: number, end: number, io: CliIo): Promise<void> {
  if (end <= start) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const stream = createReadStream(path, { start, end: end - 1, encoding: 'utf8' });
    stream.on('data', (chunk) => io.stdout.write(chunk as string));
    stream.once('end', resolve);
    stream.once('error', reject);
  });
}

function followFile(path: string, from: number, io: CliIo): Promise<number> {
  return new Promise((resolve) => {
    let position = from;
    let busy = false;
    const check = async () => {
      if (busy) return;
      busy = true;
      const size = await stat(path).then((s) => s.size).catch(() => position);
      if (size < position) position = 0;
      await pipeRange(path, position, size, io);
      position = size;
      busy = false;
    };
    const watcher = watch(path, () => void check());
    const timer = setInterval(() => void check(), 1000);
    const end = () => {
      watcher.close();
      clearInterval(timer);
      resolve(exitCodes.ok);
    };
    process.once('SIGINT', end);
  });
}

export function usage(): string {
  const width = Math.max(...Object.keys(commands).map((name) => name.length));
  return [
    'Usage: k3s-vm <command> [flags]',
    '',
    'A K3s cluster in a NixOS VM under QEMU, for tests and for your shell.',
    '',
    'Commands:',
    ...Object.entries(commands).map(([name, command]) => `  ${name.padEnd(width)}  ${command.summary}`),
    '',
    'Flags (each also a K3S_VM_* variable; a flag wins):',
    '  --dir PATH         state directory (K3S_VM_DIR, default .k3s-vm in the project root)',
    '  --name NAME        VM name and hostname (K3S_VM_NAME)',
    '  --cpus N           virtual CPUs (K3S_VM_CPUS, default 2)',
    '  --memory MIB       memory (K3S_VM_MEMORY, default 4096)',
    '  --disk-size MIB    disk size (K3S_VM_DISK_SIZE, default 20480)',
    '  --accel MODE       auto, kvm or tcg (K3S_VM_ACCEL, default auto)',
    '  --api-port PORT    host port for the API (K3S_VM_API_PORT, default: a free port)',
    '  --ssh-port PORT    host port for SSH (K3S_VM_SSH_PORT, default: a free port)',
    '  --timeout SECONDS  boot and readiness deadline (K3S_VM_TIMEOUT)',
    '  --nix PATH         Nix expression that builds the VM (K3S_VM_NIX)',
    '  --k3s VERSION      K3s minor version, such as 1.31 (K3S_VM_K3S)',
    '  --debug            debug output (K3S_VM_DEBUG)',
    '  -h, --help         this help; k3s-vm <command> --help for one command',
    '  -v, --version      the version',
    '',
    'Exit codes: 0 ok, 1 failure, 2 usage error, 3 the VM is not running.',
  ].join('\n');
}

/** Runs the CLI with argv (without node and the script) and returns the exit code. Never exits. */
export async function run(argv: readonly string[], io: CliIo): Promise<number> {
  const c = colours(io);
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    (name === undefined ? io.stderr : io.stdout).write(`${usage()}\n`);
    return name === undefined ? exitCodes.usage : exitCodes.ok;
  }
  if (name === '--version' || name === '-v') {
    io.stdout.write(`${packageJson.version}\n`);
    return exitCodes.ok;
  }
  const command = Object.hasOwn(commands, name) ? commands[name] : undefined;
  if (!command) {
    io.stderr.write(`${c.red('error:')} unknown command "${name}"\n\n${usage()}\n`);
    return exitCodes.usage;
  }
  let values: CommandContext['values'];
  let positionals: string[];
  try {
    if (command.passThrough) {
      // Our flags may come first; everything from the first other argument on is kubectl's.
      const split = rest.findIndex((arg, i) => !arg.startsWith('--') || !(arg.slice(2).split('=')[0]! in commonOptions) || (i > 0 && rest[i - 1] === '--'));
      const ours = split === -1 ? rest : rest.slice(0, split);
      const parsed = parseArgs({ args: ours, options: commonOptions, strict: true, allowPositionals: false });
      values = parsed.values as CommandContext['values'];
      positionals = split === -1 ? [] : rest.slice(split);
      if (positionals[0] === '--') positionals = positionals.slice(1);
    } else {
      const parsed = parseArgs({ args: [...rest], options: { ...commonOptions, ...command.options }, strict: true, allowPositionals: name === 'ssh' });
      values = parsed.values as CommandContext['values'];
      positionals = parsed.positionals;
    }
  } catch (error) {
    io.stderr.write(`${c.red('error:')} ${(error as Error).message}\n\nUsage: k3s-vm ${command.usage}\n`);
    return exitCodes.usage;
  }
  if (values['help']) {
    io.stdout.write(`Usage: k3s-vm ${command.usage}\n\n${command.summary}\n\nRun k3s-vm --help for the flags every command takes.\n`);
    return exitCodes.ok;
  }
  const debug = Boolean(values['debug']) || ['1', 'true', 'yes', 'on'].includes(String(io.env['K3S_VM_DEBUG'] ?? '').toLowerCase());
  const logger = createStreamLogger(io.stderr, { debug });
  const controller = new AbortController();
  const onSigint = () => controller.abort(new K3sVmError('ABORTED', 'interrupted'));
  if (name !== 'logs' && name !== 'ssh' && name !== 'kubectl') process.once('SIGINT', onSigint);
  const options: ClusterOptions = { ...configFromFlags(values), logger, env: io.env, cwd: io.cwd, signal: controller.signal };
  try {
    return await command.run({ io, values, positionals, options, logger });
  } catch (error) {
    if (error instanceof UsageError) {
      io.stderr.write(`${c.red('error:')} ${error.message}\n`);
      return exitCodes.usage;
    }
    if (error instanceof K3sVmError) {
      io.stderr.write(`${c.red('error:')} ${error.message}\n`);
      if (error.details) io.stderr.write(`${error.details}\n`);
      if (error.hint) io.stderr.write(`${c.yellow('hint:')} ${error.hint}\n`);
      if (error.code === 'CONFIG_INVALID') return exitCodes.usage;
      if (error.code === 'NOT_RUNNING') return exitCodes.notRunning;
      return exitCodes.failure;
    }
    io.stderr.write(`${c.red('error:')} ${(error as Error).stack ?? String(error)}\n`);
    return exitCodes.failure;
  } finally {
    process.off('SIGINT', onSigint);
  }
}
