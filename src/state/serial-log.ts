// Reading the tail of the VM's serial console log for error messages.
import { open } from 'node:fs/promises';

/** The last `lines` lines of a log file (reads at most the last 64 KiB); '' if missing. */
export async function tailFile(path: string, lines = 30): Promise<string> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch {
    return '';
  }
  try {
    const { size } = await handle.stat();
    const length = Math.min(size, 65_536);
    const buffer = Buffer.alloc(length);
    await handle.read(buffer, 0, length, size - length);
    const text = buffer
      .toString('utf8')
      .replace(/\r/g, '')
      .replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '');
    return text
      .split('\n')
      .filter((line, i, all) => line !== '' || i < all.length - 1)
      .slice(-lines)
      .join('\n');
  } finally {
    await handle.close();
  }
}

/** Formats a log tail as an indented block for an error's details. */
export function logTailBlock(title: string, tail: string): string {
  if (!tail.trim()) return `${title}: (empty)`;
  return `${title}:\n${tail
    .split('\n')
    .map((line) => `  | ${line}`)
    .join('\n')}`;
}
