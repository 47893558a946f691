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
    const { messages, rest } = takeJsonLines(this.buffer + chunk);
    this.buffer = rest;
    for (const message of messages) {
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

/**
 * The JSON objects in the complete lines of `text` (QMP's framing, and the guest agent's),
 * and the unfinished line after them. A line that is not JSON is skipped.
 */
export function takeJsonLines(text: string): { messages: Array<Record<string, unknown>>; rest: string } {
  const messages: Array<Record<string, unknown>> = [];
  let rest = text;
  let newline: number;
  while ((newline = rest.indexOf('\n')) >= 0) {
    const line = rest.slice(0, newline).trim();
    rest = rest.slice(newline + 1);
    if (!line) continue;
    try {
      messages.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // Not a message.
    }
  }
  return { messages, rest };
}
