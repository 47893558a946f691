// The parameter rules of nix/parameters.nix, evaluated by the real nix-instantiate against the shared table of cases.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildParameters } from '../../src/config/fingerprint.js';
import { resolveConfig } from '../../src/config/resolve-config.js';
import { nixBuildArgs } from '../../src/nix/build-vm.js';
import { repoRoot } from '../support/test-guest.js';
import { flagsThatMustSurviveSystemd, parameterCases, type RuledParameter } from './parameter-cases.js';

const parametersNix = join(repoRoot, 'nix', 'parameters.nix');
const scratch = mkdtempSync(join(tmpdir(), 'k3s-vm-rules-'));

/** Evaluates a Nix expression (with `p` bound to parameters.nix) and parses its JSON result. */
async function evaluate(expression: string): Promise<unknown> {
  const result = await execa(
    'nix-instantiate',
    ['--eval', '--strict', '--json', '-E', `let p = import ${parametersNix}; in ${expression}`],
    { reject: false },
  );
  if (result.exitCode !== 0) throw new Error(result.stderr);
  return JSON.parse(result.stdout);
}

/** The Nix error message of an expression that must fail. */
async function evaluationError(expression: string): Promise<string> {
  const result = await execa('nix-instantiate', ['--eval', '--strict', '-E', expression], { reject: false });
  expect(result.exitCode, `expected ${expression} to fail`).not.toBe(0);
  return result.stderr;
}

const table = Object.entries(parameterCases).flatMap(([parameter, cases]) =>
  cases.map((c, index) => ({ parameter: parameter as RuledParameter, index, ...c })),
);

describe('nix/parameters.nix', () => {
  // One evaluation for the whole table: each value goes in as JSON, each verdict comes out.
  let verdicts: Record<string, boolean>;
  beforeAll(async () => {
    const input = join(scratch, 'cases.json');
    const evaluable = table.filter((c) => c.typescriptOnly === undefined);
    writeFileSync(
      input,
      JSON.stringify(evaluable.map((c) => ({ key: `${c.parameter}#${c.index}`, parameter: c.parameter, value: c.value }))),
    );
    const result = await evaluate(
      `builtins.listToAttrs (map (c: { name = c.key; value = (builtins.tryEval (p.check.\${c.parameter} c.value)).success; }) (builtins.fromJSON (builtins.readFile ${input})))`,
    );
    verdicts = result as Record<string, boolean>;
  });

  it.each(table.map((c) => [c.parameter, JSON.stringify(c.value), c.accepted ? 'accepts' : 'refuses', c.note ? ` (${c.note})` : '', c]))(
    '%s: %s — Nix %s it%s',
    (_parameter, _shown, _verdict, _note, c) => {
      if (c.typescriptOnly !== undefined) {
        // Nix is never handed such a value; the TypeScript rules refuse it before Nix runs.
        expect(c.accepted).toBe(false);
        return;
      }
      expect(verdicts[`${c.parameter}#${c.index}`]).toBe(c.accepted);
    },
  );

  it('has a rule for every parameter in the table, and a case either side of it', async () => {
    const ruled = (await evaluate('builtins.attrNames p.rules')) as string[];
    for (const parameter of Object.keys(parameterCases)) expect(ruled).toContain(parameter);
    for (const cases of Object.values(parameterCases)) {
      expect(cases.some((c) => c.accepted)).toBe(true);
      expect(cases.some((c) => !c.accepted)).toBe(true);
    }
  });

  it('names the parameter, the rule and the value it refuses', async () => {
    const message = await evaluationError(`(import ${parametersNix}).check.memoryMiB 512`);
    expect(message).toContain('k3s-vm: memoryMiB must be a whole number of MiB from 1024 to 1048576');
    expect(message).toContain('got 512');
  });
});

describe('nix/default.nix checks its arguments with parameters.nix', () => {
  // A stand-in nixpkgs whose eval-config.nix returns the module's arguments instead of a
  // NixOS system: enough to see what default.nix accepts and passes on.
  const stub = join(scratch, 'stub-nixpkgs');
  beforeAll(() => {
    mkdirSync(join(stub, 'nixos', 'lib'), { recursive: true });
    writeFileSync(
      join(stub, 'nixos', 'lib', 'eval-config.nix'),
      '{ system, modules }: { config.system.build.vm = { type = "derivation"; inherit system; moduleCount = builtins.length modules; }; }\n',
    );
  });
  const nixArgs = (...args: string[]) => [
    '--eval',
    '--strict',
    join(repoRoot, 'nix'),
    '--arg',
    'nixpkgs',
    stub,
    '-A',
    'moduleCount',
    ...args,
  ];

  it('evaluates with every argument that nixBuildArgs passes', async () => {
    const config = resolveConfig(
      { projectRoot: repoRoot, memoryMiB: 1024, diskSizeMiB: 2048, k3sVersion: '1.31', offline: true, extraK3sFlags: ['--node-label=a b'] },
      {},
    );
    const parameters = buildParameters(config);
    // nixBuildArgs' own list, without the expression and the out-link it starts with.
    const args = nixBuildArgs(join(repoRoot, 'nix'), '/unused', parameters).slice(3);
    const result = await execa('nix-instantiate', nixArgs(...args), { reject: false });
    expect(result.stderr).toBe('');
    expect(result.stdout).toBe('1');
  });

  it.each([
    [['--arg', 'memoryMiB', '512'], 'memoryMiB must be a whole number of MiB from 1024'],
    [['--argstr', 'name', '1abc'], 'name must be 1 to 63 lower-case letters'],
    [['--argstr', 'k3sVersion', '1.31'], 'k3sVersion must be empty or a K3s minor version like 1_31'],
    [['--argstr', 'disableJson', '["Traefik"]'], 'disable must be a list of K3s component names'],
    [['--argstr', 'extraK3sFlagsJson', '[""]'], 'extraK3sFlags must be a list of non-empty strings'],
    [['--arg', 'offline', '"maybe"'], 'offline must be true or false'],
    [['--argstr', 'sshPublicKey', 'a\nb'], 'sshPublicKey must be one line'],
  ])('refuses %j with "%s"', async (args, message) => {
    const result = await execa('nix-instantiate', nixArgs(...args), { reject: false });
    expect(result.exitCode).not.toBe(0);
    expect(result.stderr).toContain(`k3s-vm: ${message}`);
  });
});

describe('where nixpkgs comes from (nixpkgsSource)', () => {
  it('is the pinned revision by default', async () => {
    const pin = (await evaluate('p.pin')) as { rev: string; branch: string };
    expect(pin.rev).toMatch(/^[0-9a-f]{40}$/);
    expect(await evaluate('p.nixpkgsSource ""')).toMatchObject({
      kind: 'pinned',
      url: `https://github.com/NixOS/nixpkgs/archive/${pin.rev}.tar.gz`,
    });
  });

  it.each([
    ['<nixpkgs>', { kind: 'search-path' }],
    ['nixos-25.05', { kind: 'channel', url: 'https://channels.nixos.org/nixos-25.05/nixexprs.tar.xz' }],
    ['nixos-unstable', { kind: 'channel', url: 'https://channels.nixos.org/nixos-unstable/nixexprs.tar.xz' }],
    ['nixpkgs-unstable', { kind: 'channel', url: 'https://channels.nixos.org/nixpkgs-unstable/nixexprs.tar.xz' }],
    ['/home/me/nixpkgs', { kind: 'path', path: '/home/me/nixpkgs' }],
    ['https://example.org/nixpkgs.tar.gz', { kind: 'url', url: 'https://example.org/nixpkgs.tar.gz' }],
  ])('%s is %j', async (spec, expected) => {
    expect(await evaluate(`p.nixpkgsSource ${JSON.stringify(spec)}`)).toMatchObject(expected);
  });

  it.each(['25.05', 'unstable', 'relative/path', 'http://example.org/x.tar.gz', 'nixos 25.05'])('refuses %j', async (spec) => {
    expect(await evaluationError(`(import ${parametersNix}).nixpkgsSource ${JSON.stringify(spec)}`)).toContain('k3s-vm: nixpkgs');
  });
});

/**
 * How systemd turns an ExecStart= value into argv, per systemd.service(5) "Command lines"
 * and systemd.unit(5): a line ending in a backslash continues on the next; % specifiers
 * are expanded ("%%" is "%"); the line is split into words at whitespace, double and
 * single quotes group, C-style backslash escapes are resolved; an unquoted ";" word
 * separates commands; then $VAR / ${VAR} are expanded from the environment ("$$" is
 * "$"). This model handles exactly what escaped flags may contain and refuses anything
 * it does not (an unknown specifier, a variable reference, a command separator), so an
 * escaping mistake shows up as an error or a different argv rather than passing silently.
 */
function systemdExecStartArgv(value: string): string[] {
  const joined = value.replace(/\\\n/g, ' ');
  const specified = joined.replace(/%(.)/g, (_all, c: string) => {
    if (c === '%') return '%';
    throw new Error(`specifier %${c} would be expanded`);
  });
  const words: string[] = [];
  let i = 0;
  const escapes: Record<string, string> = {
    '\\': '\\',
    '"': '"',
    "'": "'",
    n: '\n',
    t: '\t',
    r: '\r',
    a: '\x07',
    b: '\b',
    f: '\f',
    v: '\v',
    s: ' ',
  };
  while (i < specified.length) {
    while (i < specified.length && /[ \t\n]/.test(specified[i]!)) i++;
    if (i >= specified.length) break;
    const start = i;
    let word = '';
    let quote: string | undefined;
    for (; i < specified.length; i++) {
      const c = specified[i]!;
      if (c === '\\') {
        const next = specified[++i];
        if (next === undefined || !(next in escapes)) throw new Error(`unsupported escape \\${next ?? ''}`);
        word += escapes[next];
      } else if (quote !== undefined) {
        if (c === quote) quote = undefined;
        else word += c;
      } else if (c === '"' || c === "'") quote = c;
      else if (/[ \t\n]/.test(c)) break;
      else word += c;
    }
    if (quote !== undefined) throw new Error('unterminated quote');
    if (specified.slice(start, i) === ';') throw new Error('an unquoted ; separates commands');
    words.push(word);
  }
  return words.map((word) =>
    word.replace(/\$(\$|\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*)/g, (_all, ref: string) => {
      if (ref === '$') return '$';
      throw new Error(`$${ref} would be expanded from the environment`);
    }),
  );
}

describe('K3s flags through systemd (systemdArgument)', () => {
  it('the model of ExecStart= parsing itself expands what systemd expands', () => {
    expect(systemdExecStartArgv('/bin/k3s server \\\n "a b" c%%d')).toEqual(['/bin/k3s', 'server', 'a b', 'c%d']);
    expect(() => systemdExecStartArgv('/bin/k3s --x=$HOME')).toThrow(/environment/);
    expect(() => systemdExecStartArgv('/bin/k3s %n')).toThrow(/specifier/);
    expect(() => systemdExecStartArgv('/bin/k3s ; /bin/other')).toThrow(/separates/);
  });

  it('every flag reaches K3s as one argument, exactly as given', async () => {
    const input = join(scratch, 'flags.json');
    writeFileSync(input, JSON.stringify(flagsThatMustSurviveSystemd));
    const words = (await evaluate(`p.systemdArguments (builtins.fromJSON (builtins.readFile ${input}))`)) as string[];
    // Joined as services.k3s joins its ExecStart= (nixos/modules/services/cluster/rancher/default.nix).
    const execStart = ['/nix/store/0000-k3s/bin/k3s server', ...words].join(' \\\n ');
    expect(systemdExecStartArgv(execStart)).toEqual(['/nix/store/0000-k3s/bin/k3s', 'server', ...flagsThatMustSurviveSystemd]);
  });

  it('quotes and escapes in one pass', async () => {
    expect(await evaluate('p.systemdArgument "a\\"b\\\\c%d$e f"')).toBe('"a\\"b\\\\c%%d$$e f"');
  });
});
