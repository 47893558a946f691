// The tail of the VM's serial log, as errors show it.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { logTailBlock, tailFile } from '../../src/state/serial-log.js';

describe('the serial log tail', () => {
  it('returns the last lines without terminal escapes, and an empty marker for a missing log', async () => {
    const root = mkdtempSync(join(tmpdir(), 'k3s-vm-serial-'));
    const log = join(root, 'serial.log');
    writeFileSync(log, `${Array.from({ length: 50 }, (_, i) => `line ${i}\r`).join('\n')}\n\x1b[0mlast\n`);
    const tail = await tailFile(log, 3);
    expect(tail.split('\n')).toEqual(['line 48', 'line 49', 'last']);
    expect(logTailBlock('serial', '')).toBe('serial: (empty)');
    expect(await tailFile(join(root, 'missing.log'))).toBe('');
  });
});
