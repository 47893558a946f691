// TypeScript accepts and refuses the same build parameters as nix/parameters.nix: one table of cases for both.
import { describe, expect, it } from 'vitest';
import { optionTable } from '../../src/config/option-table.js';
import { parameterCases, type ParameterCase, type RuledParameter } from '../nix/parameter-cases.js';

/** Whether the option table's parser takes the value. */
function typescriptAccepts(parameter: Exclude<RuledParameter, 'sshPublicKey'>, value: unknown): boolean {
  try {
    optionTable[parameter].parse(value);
    return true;
  } catch {
    return false;
  }
}

/**
 * Where the two sides differ on purpose, what TypeScript does instead. Text is how variables and
 * flags arrive, so TypeScript reads '2' as 2 and 'true' as true before Nix sees a number or a
 * boolean; K3s versions are normalised (1.31 → 1_31) and '' is the default, not a value; the
 * disabled components are a comma-separated list in a variable or flag, so one name is a list of one.
 */
function typescriptVerdict(parameter: RuledParameter, testCase: ParameterCase): boolean {
  if (testCase.note === 'a string') return true;
  if (parameter === 'disable' && typeof testCase.value === 'string') return true;
  if (parameter === 'k3sVersion' && testCase.note?.startsWith('normalised')) return true;
  return testCase.accepted;
}

const parameters = (Object.keys(parameterCases) as RuledParameter[]).filter(
  (parameter): parameter is Exclude<RuledParameter, 'sshPublicKey'> => parameter !== 'sshPublicKey',
);

describe('the parameter rules in TypeScript', () => {
  for (const parameter of parameters) {
    const cases = parameterCases[parameter].filter((c) => !(parameter === 'k3sVersion' && c.value === ''));
    it.each(cases.map((c) => [JSON.stringify(c.value).slice(0, 40), c] as const))(`${parameter}: %s`, (_label, testCase) => {
      expect(typescriptAccepts(parameter, testCase.value)).toBe(typescriptVerdict(parameter, testCase));
    });
  }

  it('normalises a K3s version to the form Nix takes', () => {
    expect(optionTable.k3sVersion.parse('v1.31')).toBe('1_31');
    expect(parameterCases.k3sVersion.find((c) => c.value === '1_31')?.accepted).toBe(true);
  });
});
