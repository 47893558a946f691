// The defaults: the boot deadline and its scaling under emulation, and the documented defaults held to the resolved ones.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { defaults, emulationTimeoutFactor, timeoutMsFor } from '../../src/config/defaults.js';
import { optionKeys, optionTable } from '../../src/config/option-table.js';
import { resolveConfig } from '../../src/config/resolve-config.js';

describe('the boot deadline', () => {
  it('is scaled for software emulation by default, and taken as given when configured', () => {
    const config = resolveConfig({ projectRoot: '/project' }, {});
    expect(emulationTimeoutFactor).toBe(3);
    expect(timeoutMsFor(config.timeoutSeconds, 'tcg')).toBe(3 * timeoutMsFor(config.timeoutSeconds, 'kvm'));
    expect(timeoutMsFor(resolveConfig({ projectRoot: '/project', timeoutSeconds: 42 }, {}).timeoutSeconds, 'tcg')).toBe(42_000);
    expect(timeoutMsFor(42, 'kvm')).toBe(42_000);
  });
});

describe("the options' documented defaults", () => {
  // The JSDoc of K3sVmOptions is what an editor shows a user; its @default values are a copy of
  // config/defaults.ts (and of the resolver's empty lists), held to the resolved config here.
  const source = readFileSync(join(import.meta.dirname, '..', '..', 'src', 'config', 'options.ts'), 'utf8');
  const startOptions = source.slice(source.indexOf('export interface K3sVmOptions'), source.indexOf('export interface ResolvedConfig'));
  const documented = [...startOptions.matchAll(/\/\*\*((?:(?!\*\/)[\s\S])*)\*\/\s*readonly (\w+)\??:/g)].flatMap(([, comment, key]) => {
    const text = /@default\s+([\s\S]*)$/.exec(comment!.replace(/\n\s*\*/g, ' '))?.[1]?.trim();
    return text === undefined ? [] : [{ key: key!, text }];
  });
  /** The literal a @default text starts with (a number, a quoted string, a boolean or a list), if any. */
  function literal(text: string): { value: unknown } | undefined {
    const match = /^(-?\d+|'[^']*'|true|false|\[[^\]]*\])(?=$|[\s,])/.exec(text)?.[1];
    if (match === undefined) return undefined;
    return { value: JSON.parse(match.replaceAll("'", '"').replaceAll('<projectRoot>', '/project')) };
  }

  it('are found for the options that have them', () => {
    expect(documented.map(({ key }) => key)).toEqual(expect.arrayContaining(['name', 'cpus', 'memoryMiB', 'diskSizeMiB', 'disable']));
  });

  it('are, where they give a value, the value a start without settings resolves to', () => {
    const resolved = resolveConfig({ projectRoot: '/project' }, {}) as unknown as Record<string, unknown>;
    const effective = (key: string) => (key === 'timeoutSeconds' ? timeoutMsFor(undefined, 'kvm') / 1000 : resolved[key]);
    const literals = documented.flatMap(({ key, text }) => {
      const found = literal(text);
      return found ? [{ key, documented: found.value, resolved: effective(key) }] : [];
    });
    expect(literals.length).toBeGreaterThan(20);
    for (const entry of literals) expect(entry, entry.key).toEqual({ ...entry, resolved: entry.documented });
  });

  it("agree with the help's default text of every switch (off or on)", () => {
    const resolved = resolveConfig({ projectRoot: '/project' }, {}) as unknown as Record<string, unknown>;
    const switches = optionKeys.filter((key) => typeof resolved[key] === 'boolean');
    expect(switches.length).toBeGreaterThan(5);
    for (const key of switches) {
      const text = optionTable[key].defaultText.replaceAll('`', '');
      expect({ key, text }).toEqual({
        key,
        text: resolved[key] ? expect.stringMatching(/^(on|true)$/) : expect.stringMatching(/^(off|false)$/),
      });
    }
  });

  it('give a value for every default config/defaults.ts holds for an option', () => {
    const withLiteral = new Set(documented.filter(({ text }) => literal(text)).map(({ key }) => key));
    // '' for nixpkgs is "the revision the package pins", documented in words; the state directory's name is part of dir's.
    const inWords = new Set(['nixpkgs', 'dirName']);
    const missing = Object.keys(defaults).filter((key) => !inWords.has(key) && !withLiteral.has(key));
    expect(missing).toEqual([]);
  });
});
