// A fake guest SSH server (ssh2's Server, in process) for tests: key-only auth, canned command answers.
import { timingSafeEqual } from 'node:crypto';
import { createServer, type AddressInfo } from 'node:net';
import ssh2 from 'ssh2';
import { generateKeyPair, type KeyPair } from '../../src/guest/keys.js';

export interface CommandAnswer {
  readonly stdout?: string;
  readonly stderr?: string;
  readonly exitCode?: number;
}

export interface FakeSshServer {
  readonly port: number;
  /** The private key the server accepts (OpenSSH format). */
  readonly privateKey: string;
  /** Connections that completed authentication, in order. */
  readonly connections: number;
  /** Connections still open. */
  readonly open: number;
  /** Commands run, in order. */
  readonly commands: string[];
  /** Exec requests refused so far (refuseExecs). */
  readonly refused: number;
  /** The most session channels one connection has had open at the same time. */
  readonly mostSessionsAtOnce: number;
  /** Ends every open connection from the server's side. */
  kick(): void;
  /** Resolves when the open connection count drops to `count`. */
  waitForOpen(count: number): Promise<void>;
  close(): Promise<void>;
}

export interface FakeSshServerOptions {
  /** @default a free port */
  readonly port?: number;
  /** The key pair to accept. @default a generated one */
  readonly clientKeys?: KeyPair;
  /** Refuse this many exec requests first (the command is not run), as a busy dropbear now and then does. @default 0 */
  readonly refuseExecs?: number;
  /** How long each command takes before it answers. @default 0 */
  readonly answerDelayMs?: number;
}

/** Starts an SSH server on 127.0.0.1 that accepts one key and answers commands through `answer`. */
export async function startFakeSshServer(
  answer: (command: string) => CommandAnswer,
  options: FakeSshServerOptions = {},
): Promise<FakeSshServer> {
  const hostKey = generateKeyPair().privateKey;
  const clientKeys = options.clientKeys ?? generateKeyPair();
  const allowed = ssh2.utils.parseKey(clientKeys.publicKey);
  if (allowed instanceof Error) throw allowed;
  const allowedPublic = allowed.getPublicSSH();
  const commands: string[] = [];
  const clients = new Set<ssh2.Connection>();
  const waiters: Array<{ count: number; resolve: () => void }> = [];
  let connections = 0;
  let refused = 0;
  let mostSessionsAtOnce = 0;
  const settleWaiters = () => {
    for (const waiter of [...waiters]) {
      if (clients.size === waiter.count) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  };

  const server = new ssh2.Server({ hostKeys: [hostKey] }, (client) => {
    client.on('authentication', (context) => {
      if (context.method !== 'publickey') return context.reject(['publickey']);
      const key = context.key;
      const matches = key.algo === allowed.type && key.data.length === allowedPublic.length && timingSafeEqual(key.data, allowedPublic);
      if (!matches) return context.reject(['publickey']);
      if (context.signature && context.blob && !allowed.verify(context.blob, context.signature, context.hashAlgo))
        return context.reject(['publickey']);
      context.accept();
    });
    client.on('ready', () => {
      connections++;
      clients.add(client);
      let sessions = 0;
      client.on('session', (accept) => {
        const session = accept();
        sessions++;
        mostSessionsAtOnce = Math.max(mostSessionsAtOnce, sessions);
        session.on('close', () => sessions--);
        session.on('exec', (acceptExec, rejectExec, info) => {
          if (refused < (options.refuseExecs ?? 0)) {
            refused++;
            return rejectExec();
          }
          const stream = acceptExec();
          commands.push(info.command);
          const result = answer(info.command);
          setTimeout(() => {
            if (result.stdout) stream.write(result.stdout);
            if (result.stderr) stream.stderr.write(result.stderr);
            stream.exit(result.exitCode ?? 0);
            stream.end();
          }, options.answerDelayMs ?? 0);
        });
      });
    });
    client.on('close', () => {
      clients.delete(client);
      settleWaiters();
    });
    client.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve));
  const listening = (server.address() as AddressInfo).port;

  return {
    port: listening,
    privateKey: clientKeys.privateKey,
    get connections() {
      return connections;
    },
    get open() {
      return clients.size;
    },
    commands,
    get refused() {
      return refused;
    },
    get mostSessionsAtOnce() {
      return mostSessionsAtOnce;
    },
    waitForOpen(count) {
      return new Promise((resolve) => {
        waiters.push({ count, resolve });
        settleWaiters();
      });
    },
    kick() {
      for (const client of clients) client.end();
    },
    close() {
      for (const client of clients) client.end();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}
