// SSH into the guest with ssh2 and the instance key: wait until it answers, run commands, read files.
import { setTimeout as sleep } from 'node:timers/promises';
import ssh2, { type Client, type ConnectConfig } from 'ssh2';
import { abortError, K3sVmError } from '../errors.js';

export interface ExecResult {
  readonly stdout: string;
  readonly stderr: string;
  /** The command's exit code (null if it ended by a signal). */
  readonly exitCode: number | null;
}

export interface SshTarget {
  readonly port: number;
  readonly privateKey: string;
  /** @default '127.0.0.1' */
  readonly host?: string;
  /** @default 'root' */
  readonly username?: string;
}

/** An open SSH connection to the guest. */
export class GuestSsh {
  private constructor(private readonly client: Client) {}

  /** Connects once; rejects if the guest does not complete the handshake within timeoutMs. */
  static connect(target: SshTarget, timeoutMs = 10_000, signal?: AbortSignal): Promise<GuestSsh> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(abortError(signal));
      const client = new ssh2.Client();
      const config: ConnectConfig = {
        host: target.host ?? '127.0.0.1',
        port: target.port,
        username: target.username ?? 'root',
        privateKey: target.privateKey,
        readyTimeout: timeoutMs,
        keepaliveInterval: 0,
        // The host key changes with every new disk; the key pair and 127.0.0.1 forward are ours.
        hostVerifier: () => true,
      };
      let settled = false;
      const onAbort = () => {
        client.end();
        if (!settled) {
          settled = true;
          reject(abortError(signal!));
        }
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      client.once('ready', () => {
        signal?.removeEventListener('abort', onAbort);
        if (settled) return client.end();
        settled = true;
        // Small request/response exchanges: without this each one waits on a delayed ACK.
        client.setNoDelay(true);
        resolve(new GuestSsh(client));
      });
      // ssh2 can report more than one error for one connection (and more after the VM powers
      // off under an open session): keep a listener for the connection's whole life.
      client.on('error', (error) => {
        client.end();
        if (!settled) {
          settled = true;
          reject(error);
        }
      });
      client.connect(config);
    });
  }

  /** Runs a command through the guest's shell and collects its output and exit code. */
  exec(command: string, options: { signal?: AbortSignal; stdin?: string } = {}): Promise<ExecResult> {
    return new Promise((resolve, reject) => {
      this.client.exec(command, (error, channel) => {
        if (error) return reject(error);
        const stdout: Buffer[] = [];
        const stderr: Buffer[] = [];
        let exitCode: number | null = null;
        const onAbort = () => channel.close();
        options.signal?.addEventListener('abort', onAbort, { once: true });
        channel.on('data', (data: Buffer) => stdout.push(data));
        channel.stderr.on('data', (data: Buffer) => stderr.push(data));
        channel.on('exit', (code: number | null) => {
          exitCode = code;
        });
        channel.on('close', () => {
          options.signal?.removeEventListener('abort', onAbort);
          if (options.signal?.aborted) return reject(abortError(options.signal));
          resolve({ stdout: Buffer.concat(stdout).toString('utf8'), stderr: Buffer.concat(stderr).toString('utf8'), exitCode });
        });
        if (options.stdin !== undefined) channel.end(options.stdin);
        else channel.end();
      });
    });
  }

  /** Runs a command and returns stdout; a non-zero exit is an SSH_FAILED error with stderr. */
  async run(command: string, options: { signal?: AbortSignal } = {}): Promise<string> {
    const result = await this.exec(command, options);
    if (result.exitCode !== 0) {
      throw new K3sVmError('SSH_FAILED', `\`${command}\` failed in the guest (exit ${result.exitCode}): ${result.stderr.trim() || result.stdout.trim()}`);
    }
    return result.stdout;
  }

  /** Reads a file from the guest (undefined if it does not exist). */
  async readFile(path: string, options: { signal?: AbortSignal } = {}): Promise<string | undefined> {
    const quoted = `'${path.replace(/'/g, `'\\''`)}'`;
    const result = await this.exec(`test -f ${quoted} && cat ${quoted}`, options);
    return result.exitCode === 0 ? result.stdout : undefined;
  }

  close(): void {
    this.client.end();
  }
}

export interface WaitForSshOptions extends SshTarget {
  readonly deadline: number;
  readonly signal?: AbortSignal | undefined;
  /** Returns a reason when the VM is gone, ending the wait at once. */
  readonly vmGone?: () => string | undefined;
  /** Tail of the serial log, for the timeout error. */
  readonly serialTail?: () => Promise<string>;
}

/**
 * Retries connecting until the guest answers. A forwarded port accepts connections before
 * the guest listens (user-mode networking), so only a completed handshake counts.
 */
export async function waitForSsh(options: WaitForSshOptions): Promise<GuestSsh> {
  let lastError: unknown;
  for (let attempt = 1; ; attempt++) {
    if (options.signal?.aborted) throw abortError(options.signal);
    const gone = options.vmGone?.();
    if (gone) {
      const details = await options.serialTail?.();
      // Asked again: by now the exit status has usually arrived as well.
      throw new K3sVmError('QEMU_EXITED', `the VM stopped while waiting for SSH: ${options.vmGone?.() ?? gone}`, { details });
    }
    const remaining = options.deadline - Date.now();
    if (remaining <= 0) break;
    try {
      return await GuestSsh.connect(options, Math.min(remaining, 5000), options.signal);
    } catch (error) {
      if (options.signal?.aborted) throw abortError(options.signal);
      lastError = error;
    }
    await sleep(Math.min(250, Math.max(0, options.deadline - Date.now())), undefined, { signal: options.signal }).catch(() => undefined);
  }
  throw new K3sVmError('SSH_FAILED', `SSH on 127.0.0.1:${options.port} did not answer before the deadline; last error: ${(lastError as Error)?.message ?? 'none'}`, {
    details: await options.serialTail?.(),
    hint: 'the guest did not finish booting: read the serial log above (or k3s-vm logs); under emulation, raise K3S_VM_TIMEOUT',
  });
}
