// Interrupting a consumer project's run while its tests run, and checking that no QEMU is left.
import { expect } from 'vitest';
import { qemuProcessesUsing, runIn } from './consumer.js';

/**
 * Runs a consumer project until its long test has started, interrupts it with `signal`, and
 * waits until no QEMU of that state directory is left.
 */
export async function interruptDuringTests(
  project: string,
  command: string,
  args: string[],
  env: Record<string, string>,
  dir: string,
  signal: NodeJS.Signals,
): Promise<void> {
  const run = runIn(project, command, args, env);
  let output = '';
  run.all?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  await expect.poll(() => output, { timeout: 200_000, interval: 200 }).toMatch(/slow test started/);
  run.kill(signal);
  await run;
  await expect.poll(() => qemuProcessesUsing(dir).length, { timeout: 30_000, interval: 200 }).toBe(0);
}
