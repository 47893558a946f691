// SSH into the guest with ssh2 and the instance key: connect, run commands, read files.
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import ssh2, { type Client, type ConnectConfig } from 'ssh2';
import { abortError } from '../errors.js';
import { shellQuote } from './shell.js';

/** What ssh2 says when the server would not start a command (it answered the exec request with a failure, or closed the channel first). */
const execRefused = 'Unable to exec';
/** What ssh2 throws for a command on a connection that has ended (nothing was sent). */
const notConnected = 'Not connected';
/** How often a refused command is asked for in all. */
const execAttempts = 3;

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

/** What a command reads on standard input: text, bytes, or a stream piped with backpressure (an image archive). */
export type CommandInput = string | Buffer | Readable;

/** What the readiness steps and callers need from the guest: run a command, read a file. */
export interface GuestShell {
  /** Runs a command through the guest's shell and collects its output and exit code. */
  exec(command: string, options?: { signal?: AbortSignal | undefined; stdin?: CommandInput | undefined }): Promise<ExecResult>;
  /** Reads a file from the guest (undefined if it does not exist). */
  readFile(path: string, options?: { signal?: AbortSignal | undefined }): Promise<string | undefined>;
  /** Ends the connection, if the shell holds one. */
  close?(): void;
}

/** An open SSH connection to the guest. */
export class GuestSsh implements GuestShell {
  #ended = false;

  private constructor(private readonly client: Client) {
    client.once('close', () => (this.#ended = true));
  }

  /** False once the connection has ended, from either side. */
  get open(): boolean {
    return !this.#ended;
  }

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

  /**
   * Runs a command through the guest's shell and collects its output and exit code. A request
   * the server refuses to start is asked again (the command never ran, so this is safe): a busy
   * dropbear now and then closes a new session channel before it handles the exec request.
   */
  async exec(command: string, options: { signal?: AbortSignal | undefined; stdin?: CommandInput | undefined } = {}): Promise<ExecResult> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#execOnce(command, options);
      } catch (error) {
        if ((error as Error).message !== execRefused || attempt >= execAttempts || options.signal?.aborted) throw error;
        await sleep(50 * attempt);
      }
    }
  }

  #execOnce(command: string, options: { signal?: AbortSignal | undefined; stdin?: CommandInput | undefined }): Promise<ExecResult> {
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
          // A command that ended before its input did (`ssh host ls` reading a terminal) lets go of it.
          if (options.stdin instanceof Readable) options.stdin.unpipe(channel);
          if (options.signal?.aborted) return reject(abortError(options.signal));
          resolve({ stdout: Buffer.concat(stdout).toString('utf8'), stderr: Buffer.concat(stderr).toString('utf8'), exitCode });
        });
        if (options.stdin === undefined) channel.end();
        else if (typeof options.stdin === 'string' || Buffer.isBuffer(options.stdin)) channel.end(options.stdin);
        else {
          // A failed source ends the command: closing the channel makes exec settle.
          options.stdin.once('error', () => channel.close());
          options.stdin.pipe(channel);
        }
      });
    });
  }

  /** Reads a file from the guest (undefined if it does not exist). */
  readFile(path: string, options: { signal?: AbortSignal | undefined } = {}): Promise<string | undefined> {
    return readFileWith(this, path, options);
  }

  close(): void {
    this.client.end();
  }
}

export interface SharedSshOptions {
  /** How long an unused connection stays open. @default 1000 */
  readonly idleMs?: number;
  /** Handshake timeout of each connection. @default 10_000 */
  readonly connectTimeoutMs?: number;
}

/**
 * SSH connections reused by the commands that follow each other (a handshake costs far more
 * than a command), opened on first use and closed after a short idle time, so they never keep
 * the process alive. Each connection runs one command at a time; a command that comes while
 * the others are busy gets a connection of its own, kept for reuse. (Dropbear before 2024.85,
 * the test guest's server, now and then ends a connection that opens a session beside a busy
 * one.) A connection the guest ended while idle is not reused; one whose command failed is closed.
 */
export class SharedSsh implements GuestShell {
  readonly #target: SshTarget;
  readonly #idleMs: number;
  readonly #connectTimeoutMs: number;
  /** Open connections no command is using, the most recently used last. */
  #idle: GuestSsh[] = [];
  #idleTimer: NodeJS.Timeout | undefined;
  #inFlight = 0;
  /** Counts close() calls: a connection busy at a close() is closed when its command ends. */
  #closes = 0;

  constructor(target: SshTarget, options: SharedSshOptions = {}) {
    this.#target = target;
    this.#idleMs = options.idleMs ?? 1000;
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
  }

  async exec(command: string, options: { signal?: AbortSignal | undefined; stdin?: CommandInput | undefined } = {}): Promise<ExecResult> {
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
    const closes = this.#closes;
    this.#inFlight++;
    try {
      const reused = this.#takeIdle();
      if (reused) {
        try {
          return this.#keep(reused, closes, await reused.exec(command, options));
        } catch (error) {
          reused.close();
          // The guest ended it before we heard so: the command was never sent.
          if ((error as Error).message !== notConnected) throw error;
        }
      }
      const ssh = await GuestSsh.connect(this.#target, this.#connectTimeoutMs);
      try {
        return this.#keep(ssh, closes, await ssh.exec(command, options));
      } catch (error) {
        ssh.close();
        throw error;
      }
    } finally {
      if (--this.#inFlight === 0) this.#closeWhenIdle();
    }
  }

  readFile(path: string, options: { signal?: AbortSignal | undefined } = {}): Promise<string | undefined> {
    return readFileWith(this, path, options);
  }

  /** Closes the open connections now (a busy one when its command ends); a later call opens a new one. */
  close(): void {
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
    this.#closes++;
    this.#closeIdle();
  }

  /** Keeps a connection whose command ended for the next one, unless close() came meanwhile. */
  #keep(ssh: GuestSsh, closes: number, result: ExecResult): ExecResult {
    if (closes === this.#closes && ssh.open) this.#idle.push(ssh);
    else ssh.close();
    return result;
  }

  #takeIdle(): GuestSsh | undefined {
    for (let ssh = this.#idle.pop(); ssh; ssh = this.#idle.pop()) {
      if (ssh.open) return ssh;
      ssh.close();
    }
    return undefined;
  }

  #closeWhenIdle(): void {
    if (this.#idle.length === 0) return;
    this.#idleTimer = setTimeout(() => {
      this.#idleTimer = undefined;
      this.#closeIdle();
    }, this.#idleMs);
    this.#idleTimer.unref();
  }

  #closeIdle(): void {
    for (const ssh of this.#idle.splice(0)) ssh.close();
  }
}

async function readFileWith(shell: GuestShell, path: string, options: { signal?: AbortSignal | undefined }): Promise<string | undefined> {
  const quoted = shellQuote(path);
  const result = await shell.exec(`test -f ${quoted} && cat ${quoted}`, options);
  return result.exitCode === 0 ? result.stdout : undefined;
}
