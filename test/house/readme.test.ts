// The README's configuration table is the option table the code uses.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { configurationTable, optionKeys, optionTable } from '../../src/config/option-table.js';
import { repoRoot } from '../helpers/test-guest.js';

const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');

describe('the README', () => {
  it('holds the configuration table exactly as the option table renders it', () => {
    expect(readme).toContain(`${configurationTable()}\n`);
  });

  it('lists every CLI flag where it lists the flags every command takes', () => {
    const flags = optionKeys.flatMap((key) => (optionTable[key].flag ? [`--${optionTable[key].flag}`] : []));
    const sentence = /Every command takes the flags in the configuration table \(([^)]*)/.exec(readme)?.[1] ?? '';
    expect(
      sentence
        .replace(/`/g, '')
        .split(/\s+/)
        .filter((word) => word.startsWith('--'))
        .map((word) => word.replace(/[,.]$/, '')),
    ).toEqual(flags);
  });
});
