// The host's end of QEMU's guest agent channel: a virtio-serial port named
// org.qemu.guest_agent.0 in the guest (where qemu-ga listens), a Unix socket on the host.
// k3s-vm uses it to set the guest's clock after a rewind without an SSH handshake.
import { createConnection } from 'node:net';
import { dirname, join } from 'node:path';

/** The name the guest agent looks for (qemu-ga's default port, the one libvirt names too). */
const portName = 'org.qemu.guest_agent.0';

/** Beside QMP's socket, with a name of the same length (so it fits wherever QMP's does). */
export function guestAgentSocketOf(qmpSocket: string): string {
  return join(dirname(qmpSocket), 'qga.sock');
}

/** QEMU options for the channel: a virtio-serial bus, the agent's port on it, and the host socket behind it. */
export function guestAgentOptions(socketPath: string): string[] {
  return [
    '-chardev',
    `socket,id=k3svm-qga,path=${socketPath},server=on,wait=off`,
    '-device',
    'virtio-serial-pci,id=k3svm-serial',
    '-device',
    `virtserialport,bus=k3svm-serial.0,chardev=k3svm-qga,name=${portName}`,
  ];
}

/**
 * Sets the guest's clock to the host's through the guest agent: guest-sync-delimited first (the
 * agent's reply follows a 0xFF byte, so anything left in the channel from before is skipped),
 * then `date -u -s @SECONDS` run by the agent (guest-exec, then guest-exec-status until it has
 * exited). Not guest-set-time: after setting the clock that runs `hwclock -w`, which waits for
 * the next whole second to write the RTC (half a second on average). Rejects within timeoutMs
 * when nothing answers: a guest without the agent, or one that is not running.
 */
export async function setGuestClockByAgent(
  socketPath: string,
  options: { timeoutMs: number; signal?: AbortSignal | undefined },
): Promise<void> {
  const socket = createConnection({ path: socketPath });
  const id = Math.floor(Math.random() * 2 ** 31);
  let received = Buffer.alloc(0);
  let waiting: { test: (message: Record<string, unknown>) => boolean; resolve: (message: Record<string, unknown>) => void } | undefined;
  let synced = false;
  let timer: NodeJS.Timeout | undefined;
  const done = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the guest agent did not answer within ${options.timeoutMs} ms`)), options.timeoutMs);
    socket.on('error', (error) => reject(new Error(`the guest agent's socket ${socketPath}: ${error.message}`, { cause: error })));
    socket.on('close', () => reject(new Error('the guest agent channel closed')));
    options.signal?.addEventListener('abort', () => reject(options.signal?.reason), { once: true });
  });
  // Settles only with a failure, which after the exchange (the socket closed) nobody awaits.
  done.catch(() => undefined);
  socket.on('data', (chunk: Buffer) => {
    received = Buffer.concat([received, chunk]);
    if (!synced) {
      // Only what follows the sync's delimiter is an answer to us.
      const delimiter = received.lastIndexOf(0xff);
      if (delimiter < 0) return;
      received = received.subarray(delimiter + 1);
    }
    let newline: number;
    while ((newline = received.indexOf(0x0a)) >= 0) {
      const line = received.subarray(0, newline).toString('utf8').trim();
      received = received.subarray(newline + 1);
      if (!line) continue;
      let message: Record<string, unknown>;
      try {
        message = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if (waiting?.test(message)) waiting.resolve(message);
    }
  });
  const ask = (command: Record<string, unknown>, test: (message: Record<string, unknown>) => boolean, prefix = '') =>
    Promise.race([
      done,
      new Promise<Record<string, unknown>>((resolve) => {
        waiting = { test, resolve };
        socket.write(`${prefix}${JSON.stringify(command)}\n`, 'latin1');
      }),
    ]);
  try {
    await Promise.race([done, new Promise<void>((resolve) => socket.once('connect', () => resolve()))]);
    // 0xFF first: the agent drops a half-read command, then answers the sync after a 0xFF of its own.
    await ask({ execute: 'guest-sync-delimited', arguments: { id } }, (message) => message['return'] === id, '\xff');
    synced = true;
    // The host's time is read as late as possible: the agent starts date right after.
    const seconds = Math.floor(Date.now() / 1000);
    const started = await ask(
      { execute: 'guest-exec', arguments: { path: 'date', arg: ['-u', '-s', `@${seconds}`], 'capture-output': true } },
      () => true,
    );
    const pid = (started['return'] as { pid?: unknown } | undefined)?.pid;
    if (typeof pid !== 'number') throw new Error(`the guest agent did not run date: ${errorText(started)}`);
    for (;;) {
      const status = await ask({ execute: 'guest-exec-status', arguments: { pid } }, () => true);
      const result = status['return'] as { exited?: boolean; exitcode?: number; 'err-data'?: string } | undefined;
      if (!result) throw new Error(`the guest agent lost date (pid ${pid}): ${errorText(status)}`);
      if (result.exited) {
        if (result.exitcode === 0) return;
        const stderr = Buffer.from(result['err-data'] ?? '', 'base64')
          .toString('utf8')
          .trim();
        throw new Error(`date -s in the guest exited with ${result.exitcode ?? 'a signal'}${stderr ? `: ${stderr}` : ''}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  } finally {
    clearTimeout(timer);
    socket.destroy();
  }
}

function errorText(reply: Record<string, unknown>): string {
  const error = reply['error'] as { class?: string; desc?: string } | undefined;
  return error ? (error.desc ?? error.class ?? 'unknown error') : JSON.stringify(reply);
}
