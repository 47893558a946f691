// What a CLI run may touch: its streams, environment and working directory (so tests need no spawning).
import type { Readable } from 'node:stream';

export interface CliIo {
  readonly stdout: { write(chunk: string): unknown };
  readonly stderr: { write(chunk: string): unknown };
  /** Standard input, for commands that pass it on (ssh -- command); none: an empty input. */
  readonly stdin?: Readable | undefined;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly cwd: string;
  /** Whether stdin/stdout are a terminal (interactive ssh needs one). */
  readonly interactive: boolean;
}

/** Documented exit codes. */
export const exitCodes = {
  ok: 0,
  /** Something failed (the message says what). */
  failure: 1,
  /** Unknown command or flag, or a bad value. */
  usage: 2,
  /** The command needs a running VM and there is none. */
  notRunning: 3,
} as const;

/** Colours only on a terminal and never with NO_COLOR set. */
export function colours(io: CliIo): {
  red(text: string): string;
  yellow(text: string): string;
  green(text: string): string;
  dim(text: string): string;
} {
  const on = io.interactive && !('NO_COLOR' in io.env && io.env['NO_COLOR'] !== '') && io.env['TERM'] !== 'dumb';
  const wrap = (code: number) => (text: string) => (on ? `\x1b[${code}m${text}\x1b[0m` : text);
  return { red: wrap(31), yellow: wrap(33), green: wrap(32), dim: wrap(2) };
}
