// The host's end of QEMU's guest agent channel: a virtio-serial port named
// org.qemu.guest_agent.0 in the guest (where qemu-ga listens), a Unix socket on the host.
// k3s-vm uses it to set the guest's clock after a load without an SSH handshake.
import { createConnection } from 'node:net';
import { dirname, join } from 'node:path';
import { takeJsonLines } from './qmp.js';

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

/** QEMU has not opened the socket yet (it is still starting): worth connecting again. */
export class GuestAgentNotListening extends Error {}

/**
 * Sets the guest's clock to the host's through the guest agent: guest-sync-delimited first (the
 * agent's reply follows a 0xFF byte, so anything left in the channel from before is skipped),
 * then guest-set-time with the host's time in nanoseconds (the agent sets the system clock,
 * then the RTC from it with hwclock). Running `date -s` through guest-exec instead measured no
 * quicker on the test guest, and takes three commands and a whole-second clock. Rejects with
 * GuestAgentNotListening when the socket is not there yet, and within timeoutMs of connecting
 * when nothing answers: a guest without the agent.
 */
export async function setGuestClockByAgent(
  socketPath: string,
  options: { timeoutMs: number; signal?: AbortSignal | undefined },
): Promise<void> {
  const socket = createConnection({ path: socketPath });
  const id = Math.floor(Math.random() * 2 ** 31);
  let received = Buffer.alloc(0);
  let text = '';
  let synced = false;
  let waiting: ((message: Record<string, unknown>) => void) | undefined;
  let timer: NodeJS.Timeout | undefined;
  const failed = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the guest agent did not answer within ${options.timeoutMs} ms`)), options.timeoutMs);
    socket.on('error', (error: NodeJS.ErrnoException) => {
      const message = `the guest agent's socket ${socketPath}: ${error.message}`;
      reject(error.code === 'ENOENT' || error.code === 'ECONNREFUSED' ? new GuestAgentNotListening(message) : new Error(message));
    });
    socket.on('close', () => reject(new Error('the guest agent channel closed')));
    options.signal?.addEventListener('abort', () => reject(options.signal?.reason), { once: true });
  });
  // After the exchange (the socket closed) nobody awaits it.
  failed.catch(() => undefined);
  socket.on('data', (chunk: Buffer) => {
    if (!synced) {
      // Only what follows the sync's delimiter answers us.
      received = Buffer.concat([received, chunk]);
      const delimiter = received.lastIndexOf(0xff);
      if (delimiter < 0) return;
      chunk = received.subarray(delimiter + 1);
      synced = true;
    }
    const { messages, rest } = takeJsonLines(text + chunk.toString('utf8'));
    text = rest;
    for (const message of messages) waiting?.(message);
  });
  const ask = (command: Record<string, unknown>, prefix = '') =>
    Promise.race([
      failed,
      new Promise<Record<string, unknown>>((resolve) => {
        waiting = resolve;
        socket.write(`${prefix}${JSON.stringify(command)}\n`, 'latin1');
      }),
    ]);
  try {
    // 0xFF first: the agent drops a half-read command, then answers the sync after a 0xFF of its own.
    const sync = await ask({ execute: 'guest-sync-delimited', arguments: { id } }, '\xff');
    if (sync['return'] !== id) throw new Error(`the guest agent answered the sync with ${JSON.stringify(sync)}`);
    // The host's time is read as late as possible: the agent sets it on receipt.
    const reply = await ask({ execute: 'guest-set-time', arguments: { time: Date.now() * 1_000_000 } });
    const error = reply['error'] as { class?: string; desc?: string } | undefined;
    if (error) throw new Error(`the guest agent refused guest-set-time: ${error.desc ?? error.class ?? 'unknown error'}`);
  } finally {
    clearTimeout(timer);
    socket.destroy();
  }
}
