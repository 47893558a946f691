// The k3s-vm command line: parses argv, runs one command over the cluster API, and returns an exit code.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { flagDefinitions, flagHelpLines, optionOfFlag, stderrLogger, type ClusterOptions } from '../../cluster/index.js';
import { K3sVmError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { commands, UsageError, type CommandContext } from './commands.js';
import { colours, exitCodes, type CliIo } from './io.js';

const packageJson = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };

/** Flags every command takes: one per option in the option table, plus --help. */
const commonOptions = { ...flagDefinitions(), help: { type: 'boolean', short: 'h' } } as const;

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
    ...flagHelpLines(),
    '  -h, --help  this help; k3s-vm <command> --help for one command',
    '  -v, --version  the version',
    '',
    'Exit codes: 0 ok, 1 failure, 2 usage error, 3 the VM is not running.',
  ].join('\n');
}

interface Parsed {
  readonly values: CommandContext['values'];
  readonly positionals: string[];
}

function parse(name: string, rest: readonly string[]): Parsed {
  const command = commands[name]!;
  if (command.passThrough) {
    // Our flags may come first; everything from the first other argument on is the tool's.
    const split = rest.findIndex((arg) => !arg.startsWith('--') || !(arg.slice(2).split('=')[0]! in commonOptions));
    const ours = split === -1 ? [...rest] : rest.slice(0, split);
    const parsed = parseArgs({ args: ours, options: commonOptions, strict: true, allowPositionals: false });
    const theirs = split === -1 ? [] : rest.slice(split);
    return { values: parsed.values, positionals: theirs[0] === '--' ? theirs.slice(1) : theirs };
  }
  const parsed = parseArgs({
    args: [...rest],
    options: { ...commonOptions, ...command.options },
    strict: true,
    allowPositionals: Boolean(command.positionals),
  });
  return { values: parsed.values as CommandContext['values'], positionals: parsed.positionals };
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
  let parsed: Parsed;
  try {
    parsed = parse(name, rest);
  } catch (error) {
    io.stderr.write(`${c.red('error:')} ${(error as Error).message}\n\nUsage: k3s-vm ${command.usage}\n`);
    return exitCodes.usage;
  }
  if (parsed.values['help']) {
    io.stdout.write(`Usage: k3s-vm ${command.usage}\n\n${command.summary}\n\nRun k3s-vm --help for the flags every command takes.\n`);
    return exitCodes.ok;
  }
  const flags = Object.fromEntries(Object.entries(parsed.values).filter(([flag]) => optionOfFlag(flag) !== undefined));
  const values = Object.fromEntries(Object.entries(parsed.values).filter(([flag]) => optionOfFlag(flag) === undefined));
  const controller = new AbortController();
  const onSigint = () => controller.abort(new K3sVmError('ABORTED', 'interrupted'));
  if (!command.ownsSigint) process.once('SIGINT', onSigint);
  let logger: Logger | undefined;
  try {
    const base: ClusterOptions = { flags, env: io.env, cwd: io.cwd };
    logger = stderrLogger(base, io.stderr);
    const options: ClusterOptions = { ...base, logger, signal: controller.signal };
    return await command.run({ io, values, positionals: parsed.positionals, options, logger });
  } catch (error) {
    return reportError(error, io, logger);
  } finally {
    process.off('SIGINT', onSigint);
  }
}

/** Prints an error the way every command does (message, details, hint) and picks the exit code. */
function reportError(error: unknown, io: CliIo, logger: Logger | undefined): number {
  const c = colours(io);
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
  // Not one of ours: say what happened and where to look, with the stack only when debugging.
  const unexpected = error as NodeJS.ErrnoException;
  io.stderr.write(`${c.red('error:')} ${unexpected?.message ?? String(error)}\n`);
  io.stderr.write(
    `${c.yellow('hint:')} this error was not expected; run again with --debug (or K3S_VM_DEBUG=1) to see where it happened\n`,
  );
  if (unexpected?.stack) logger?.debug(unexpected.stack);
  return exitCodes.failure;
}
