// Images named at build time: the preloadImages rule of nix/parameters.nix (real nix-instantiate) and of the option table agree, and default.nix checks and passes it.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import { optionTable, preloadImagePattern } from '../../src/config/option-table.js';
import { buildParameters } from '../../src/config/fingerprint.js';
import { resolveConfig } from '../../src/config/resolve-config.js';
import { nixBuildArgs } from '../../src/nix/build-vm.js';
import { repoRoot } from '../support/test-guest.js';

const parametersNix = join(repoRoot, 'nix', 'parameters.nix');
const scratch = mkdtempSync(join(tmpdir(), 'k3s-vm-preload-'));

const cases: ReadonlyArray<readonly [string, boolean]> = [
  ['/nix/store/0123456789abcdfghijklmnpqrsvwxyz-docker-image-app.tar.gz', true],
  ['/tmp/app.tar', true],
  ['/tmp/app.tgz', true],
  ['/tmp/app.tar.zst', true],
  ['/tmp/app.tzst', true],
  ['/tmp/app.tar.bz2', true],
  ['/tmp/app.tar.lz4', true],
  ['/tmp/app.zip', false],
  ['/tmp/app.tar.xz', false],
  ['/tmp/app', false],
  ['/tmp/line\nbreak.tar', false],
];

async function nixAccepts(path: string): Promise<boolean> {
  const result = await execa(
    'nix-instantiate',
    ['--eval', '--strict', '-E', `(import ${parametersNix}).rules.preloadImages [ ${JSON.stringify(path)} ]`],
    { reject: false },
  );
  if (result.exitCode !== 0) throw new Error(result.stderr);
  return result.stdout.trim() === 'true';
}

describe('the preloadImages rule', () => {
  it.each(cases)('%j: accepted %s by Nix and by TypeScript alike', async (path, accepted) => {
    expect(await nixAccepts(path)).toBe(accepted);
    expect(preloadImagePattern.test(path)).toBe(accepted);
  });

  it('refuses a relative path in Nix (TypeScript makes paths absolute first)', async () => {
    expect(await nixAccepts('app.tar')).toBe(false);
    expect(optionTable.preloadImages.parse('app.tar,b.tar.gz')).toEqual(['app.tar', 'b.tar.gz']);
  });

  it('is a build parameter: passed to nix-build only when there are any', () => {
    const config = resolveConfig({ projectRoot: scratch, preloadImages: ['images/app.tar.gz'] }, {});
    expect(config.preloadImages).toEqual([join(scratch, 'images/app.tar.gz')]);
    const parameters = buildParameters(config);
    expect(nixBuildArgs('/expr', '/out', parameters).slice(-2)).toEqual([
      'preloadImagesJson',
      JSON.stringify([join(scratch, 'images/app.tar.gz')]),
    ]);
    const none = buildParameters(resolveConfig({ projectRoot: scratch }, {}));
    expect(none).not.toHaveProperty('preloadImages');
    expect(nixBuildArgs('/expr', '/out', none)).not.toContain('preloadImagesJson');
  });
});

describe('nix/default.nix checks preloadImagesJson', () => {
  const stub = join(scratch, 'stub-nixpkgs');
  beforeAll(() => {
    mkdirSync(join(stub, 'nixos', 'lib'), { recursive: true });
    writeFileSync(
      join(stub, 'nixos', 'lib', 'eval-config.nix'),
      '{ system, modules }: { config.system.build.vm = { type = "derivation"; moduleCount = builtins.length modules; }; }\n',
    );
  });
  const evaluate = (json: string) =>
    execa(
      'nix-instantiate',
      ['--eval', '--strict', join(repoRoot, 'nix'), '--arg', 'nixpkgs', stub, '-A', 'moduleCount', '--argstr', 'preloadImagesJson', json],
      { reject: false },
    );

  it('accepts absolute archive paths', async () => {
    const result = await evaluate('["/nix/store/0123456789abcdfghijklmnpqrsvwxyz-app.tar.gz"]');
    expect(result.stderr).toBe('');
    expect(result.stdout.trim()).toBe('1');
  });

  it('refuses anything else before nixpkgs is evaluated, naming the parameter', async () => {
    const result = await evaluate('["app.zip"]');
    expect(result.exitCode).not.toBe(0);
    expect(result.stderr).toContain('k3s-vm: preloadImages must be a list of absolute paths of image archives ending in .tar, .tar.gz');
  });
});
