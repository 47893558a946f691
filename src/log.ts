// The single sink library code reports progress through; adapters decide where it goes.

/** Where progress, warnings and debug lines go. The library never writes to the console itself. */
export interface Logger {
  /** A step of a long operation ("booting the VM", "step 3 of 6 …"). */
  progress(message: string): void;
  /** Something the user should notice (for example falling back to software emulation). */
  warn(message: string): void;
  /** Detail for troubleshooting; shown only when debugging is on. */
  debug(message: string): void;
  /**
   * A line that replaces the previous status line (a build's running totals), on a terminal;
   * '' clears it. Absent where lines cannot be replaced: then progress() is used instead.
   */
  status?(line: string): void;
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
export function createStreamLogger(stream: { write(chunk: string): unknown; isTTY?: boolean }, options: StreamLoggerOptions = {}): Logger {
  const prefix = options.prefix ?? 'k3s-vm';
  // A status line is on screen until the next line replaces or follows it.
  let statusShown = false;
  const clearStatus = () => {
    if (statusShown) stream.write('\r\x1b[K');
    statusShown = false;
  };
  const line = (tag: string, message: string) => {
    clearStatus();
    for (const text of message.split('\n')) stream.write(`${prefix}${tag} ${text}\n`);
  };
  const logger: Logger = {
    progress: (message) => line(':', message),
    warn: (message) => line(' warning:', message),
    debug: (message) => {
      if (options.debug) line(' debug:', message);
    },
  };
  if (stream.isTTY) {
    logger.status = (text) => {
      // An empty line clears the status line.
      if (!text) return clearStatus();
      stream.write(`\r\x1b[K${prefix}: ${text}`);
      statusShown = true;
    };
  }
  return logger;
}
