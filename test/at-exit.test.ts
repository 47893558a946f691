// The one registry of exit work, in a real Node process that ends with process.exit.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { repoRoot } from './support/test-guest.js';

/** Runs `body` in a fresh Node process with atExit imported; returns its exit code and what it printed. */
function runWithAtExit(body: string): { status: number | null; stdout: string; stderr: string } {
  const script = `import { atExit } from ${JSON.stringify(`${repoRoot}/src/at-exit.ts`)};\n${body}`;
  return spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
}

describe('exit work', () => {
  it('runs newest first at process.exit, past work that throws, and never runs what was cancelled', () => {
    const printed = runWithAtExit(`
      const say = (text) => () => process.stdout.write(text + '\\n');
      atExit(say('lock released'));
      const cancel = atExit(say('cancelled work'));
      atExit(() => { throw new Error('broken work'); });
      atExit(say('VM released'));
      cancel();
      cancel();
      process.exit(3);
    `);
    expect(printed.stderr).toBe('');
    expect(printed.status).toBe(3);
    expect(printed.stdout.trim().split('\n')).toEqual(['VM released', 'lock released']);
  });

  it('adds one exit listener however much work is registered', () => {
    const printed = runWithAtExit(`
      const before = process.listenerCount('exit');
      for (let i = 0; i < 20; i++) atExit(() => {});
      process.stdout.write(String(process.listenerCount('exit') - before));
    `);
    expect(printed.stderr).toBe('');
    expect(printed.stdout).toBe('1');
  });
});
