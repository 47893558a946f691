// The single sink library code reports progress through; adapters decide where it goes.

/** Where progress, warnings and debug lines go. The library never writes to the console itself. */
export interface Logger {
  /** A step of a long operation ("booting the VM", "step 3 of 6 …"). */
  progress(message: string): void;
  /** Something the user should notice (for example falling back to software emulation). */
  warn(message: string): void;
  /** Detail for troubleshooting; shown only when debugging is on. */
  debug(message: string): void;
}

export const silentLogger: Logger = {
  progress() {},
  warn() {},
  debug() {},
};

export interface StreamLoggerOptions {
  /** Show debug lines too. */
  readonly debug?: boolean;
  /** Prefix for every line. @default 'k3s-vm' */
  readonly prefix?: string;
}

/** A logger that writes one line per message to a stream (stderr in the adapters). */
export function createStreamLogger(
  stream: { write(chunk: string): unknown },
  options: StreamLoggerOptions = {},
): Logger {
  const prefix = options.prefix ?? 'k3s-vm';
  const line = (tag: string, message: string) => {
    for (const text of message.split('\n')) stream.write(`${prefix}${tag} ${text}\n`);
  };
  return {
    progress: (message) => line(':', message),
    warn: (message) => line(' warning:', message),
    debug: (message) => {
      if (options.debug) line(' debug:', message);
    },
  };
}
