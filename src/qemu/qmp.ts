// A minimal QMP client: greeting, capabilities negotiation, commands and their replies.
import { createConnection, type Socket } from 'node:net';
import { K3sVmError } from '../errors.js';

interface Pending {
  resolve(value: unknown): void;
  reject(error: Error): void;
}

export class QmpClient {
  private buffer = '';
  private readonly queue: Pending[] = [];
  private greeted!: Promise<void>;
  private closedError: Error | undefined;

  private constructor(private readonly socket: Socket) {}

  /** Connects and negotiates capabilities; rejects within timeoutMs. */
  static async connect(path: string, timeoutMs = 3000): Promise<QmpClient> {
    const socket = createConnection({ path });
    const client = new QmpClient(socket);
    client.greeted = new Promise<void>((resolve, reject) => client.queue.push({ resolve: () => resolve(), reject }));
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => client.onData(chunk));
    socket.on('error', (error) => client.fail(error));
    socket.on('close', () => client.fail(new Error('QMP connection closed')));
    const timer = setTimeout(() => client.fail(new Error(`no QMP greeting within ${timeoutMs} ms`)), timeoutMs);
    try {
      await client.greeted;
      await client.execute('qmp_capabilities');
    } catch (error) {
      socket.destroy();
      throw new K3sVmError('QMP_FAILED', `could not talk to QEMU's control socket ${path}: ${(error as Error).message}`, { cause: error });
    } finally {
      clearTimeout(timer);
    }
    return client;
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let newline: number;
    while ((newline = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, newline).trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (!line) continue;
      let message: Record<string, unknown>;
      try {
        message = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if ('event' in message) continue;
      const pending = this.queue.shift();
      if (!pending) continue;
      if ('error' in message) {
        const error = message['error'] as { class?: string; desc?: string };
        pending.reject(new Error(`${error.class ?? 'Error'}: ${error.desc ?? 'unknown QMP error'}`));
      } else pending.resolve('QMP' in message ? undefined : message['return']);
    }
  }

  private fail(error: Error): void {
    this.closedError ??= error;
    for (const pending of this.queue.splice(0)) pending.reject(error);
  }

  /** Sends a command and resolves with its "return" value. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ resolve: resolve as (value: unknown) => void, reject });
      this.socket.write(`${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`);
    });
  }

  close(): void {
    this.socket.destroy();
  }
}
