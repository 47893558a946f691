// What every lifecycle operation does first: resolve the config, open the state directory, pick the logger.
import type { ResolvedConfig } from '../config/options.js';
import { environment, resolveConfig } from '../config/resolve-config.js';
import { createStreamLogger, silentLogger, type Logger } from '../log.js';
import { InstanceDir } from '../state/instance-dir.js';
import type { ClusterOptions } from './options.js';

/** How long an operation waits for another process's start (a boot can take minutes under emulation). */
export const startLockTimeoutMs = 30 * 60_000;
/** How long a build waits for the lock (a first build downloads for minutes). */
export const buildLockTimeoutMs = 10 * 60_000;
/** How long stop, reset and release wait for the lock. */
export const stopLockTimeoutMs = 2 * 60_000;

export interface Prepared {
  readonly config: ResolvedConfig;
  readonly dir: InstanceDir;
  readonly logger: Logger;
}

/**
 * Resolves and validates the config (nothing is touched when it is bad), unless the caller
 * already has, then creates the state directory.
 */
export async function prepare(options: ClusterOptions, config: ResolvedConfig = configOf(options)): Promise<Prepared> {
  const dir = new InstanceDir(config.dir, config.names.dir);
  await dir.ensure();
  return { config, dir, logger: options.logger ?? silentLogger };
}

export function configOf(options: ClusterOptions): ResolvedConfig {
  return resolveConfig(options, environment(options.env), options.cwd, options.flags);
}

/**
 * The logger the adapters use: lines on a stream (stderr), debug lines when the resolved
 * `debug` option (K3S_VM_DEBUG, --debug) asks for them. Throws CONFIG_INVALID like any
 * operation would.
 */
export function stderrLogger(options: ClusterOptions = {}, stream: { write(chunk: string): unknown } = process.stderr): Logger {
  return createStreamLogger(stream, { debug: configOf(options).debug });
}
