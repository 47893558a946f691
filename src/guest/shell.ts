// Command lines for the guest's POSIX shell.

/** Quotes one argument for a POSIX shell. */
export function shellQuote(argument: string): string {
  return /^[\w@%+=:,./-]+$/.test(argument) ? argument : `'${argument.replace(/'/g, `'\\''`)}'`;
}

/**
 * A command line from an argument vector, the way `kubectl exec` and `limactl shell` keep
 * arguments: one argument is already a command line for the shell; several are quoted each.
 */
export function shellCommandLine(argv: readonly string[]): string {
  return argv.length === 1 ? argv[0]! : argv.map(shellQuote).join(' ');
}
