// How this instance's QEMU is recognised: the -qmp argument it is launched with, and the matcher for it.

/** The value of QEMU's `-qmp` option for the instance's control socket. Launch writes exactly this. */
export function qmpArgument(qmpSocketPath: string): string {
  return `unix:${qmpSocketPath},server=on,wait=off`;
}

/**
 * Whether a command line (argv) is the QEMU launched with qmpArgument(qmpSocketPath): a pid
 * file left behind can point at an unrelated process that reused the number.
 */
export function isQemuCommandLine(argv: readonly string[], qmpSocketPath: string): boolean {
  const expected = qmpArgument(qmpSocketPath);
  return argv.some((arg) => arg === expected || arg.split(/\s+/).includes(expected));
}
