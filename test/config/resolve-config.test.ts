import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { findProjectRoot, packageNixDir, resolveConfig, type FlagValues } from '../../src/config/resolve-config.js';
import type { K3sVmOptions } from '../../src/config/options.js';
import { setting } from '../../src/config/names.js';
import { K3sVmError } from '../../src/errors.js';

const project = mkdtempSync(join(tmpdir(), 'k3s-vm-config-'));
writeFileSync(join(project, 'package.json'), '{}');
mkdirSync(join(project, 'src', 'deep'), { recursive: true });
mkdirSync(join(project, 'vm'));
writeFileSync(join(project, 'vm', 'default.nix'), '{ ... }: {}');

function refused(env: Record<string, string>, options = {}): K3sVmError {
  try {
    resolveConfig(options, env, project);
  } catch (error) {
    expect(error).toBeInstanceOf(K3sVmError);
    expect((error as K3sVmError).code).toBe('CONFIG_INVALID');
    return error as K3sVmError;
  }
  throw new Error(`expected ${JSON.stringify(env)} to be refused`);
}

/** The error a call throws (a test fails if it throws none). */
function catchError(call: () => unknown): unknown {
  try {
    call();
  } catch (error) {
    return error;
  }
  throw new Error('expected the call to throw');
}

describe('resolveConfig', () => {
  it('keeps how each value was given, so that messages name what the user wrote', () => {
    const config = resolveConfig(
      { memoryMiB: 4096, timeoutSeconds: 600 },
      { K3S_VM_TIMEOUT: '900', K3S_VM_SNAPSHOT: '1', K3S_VM_CPUS: '' },
      project,
      { 'disk-size': '8192' },
    );
    expect(config.names).toMatchObject({
      diskSizeMiB: '--disk-size',
      memoryMiB: 'option memoryMiB',
      // The option wins over the variable: it is the one to change.
      timeoutSeconds: 'option timeoutSeconds',
      snapshot: 'K3S_VM_SNAPSHOT',
      // Empty counts as unset; a value left to its default is named by its variable.
      cpus: 'K3S_VM_CPUS',
      dir: 'K3S_VM_DIR',
    });
    expect(setting(config.names, 'diskSizeMiB', 2048)).toBe('--disk-size=2048');
    expect(setting(config.names, 'timeoutSeconds', 900)).toBe('timeoutSeconds: 900');
    expect(setting(config.names, 'snapshot', false)).toBe('K3S_VM_SNAPSHOT=0');
    // A boolean flag takes no value (`--offline=1` is refused by the CLI).
    expect(setting({ offline: '--offline' }, 'offline', true)).toBe('--offline');
    expect(setting({ offline: '--offline' }, 'offline', false)).toBe('without --offline');
    expect(setting(config.names, 'allowContexts', 'kind-ci', ['kind-ci'])).toBe('K3S_VM_ALLOW_CONTEXTS=kind-ci');
    expect(setting({ allowContexts: 'option allowContexts' }, 'allowContexts', 'kind-ci', ['kind-ci'])).toBe('allowContexts: ["kind-ci"]');
  });

  it('applies the defaults relative to the project root found upwards from the working directory', () => {
    const config = resolveConfig({}, {}, join(project, 'src', 'deep'));
    expect(config.projectRoot).toBe(project);
    expect(config.dir).toBe(join(project, '.k3s-vm'));
    expect(config).toMatchObject({
      name: 'k3s-vm',
      cpus: 2,
      memoryMiB: 4096,
      diskSizeMiB: 20480,
      accel: 'auto',
      keep: false,
      debug: false,
    });
    expect(config.apiPort).toBeUndefined();
    expect(config.sshPort).toBeUndefined();
    expect(config.timeoutSeconds).toBeUndefined();
    expect(config.nix).toBe(packageNixDir);
    expect(config.k3sVersion).toBe('');
  });

  it('reads every K3S_VM_* variable', () => {
    const config = resolveConfig(
      {},
      {
        K3S_VM_DIR: 'state',
        K3S_VM_NAME: 'ci-vm',
        K3S_VM_CPUS: '4',
        K3S_VM_MEMORY: '8192',
        K3S_VM_DISK_SIZE: '30000',
        K3S_VM_ACCEL: 'TCG',
        K3S_VM_KEEP: '1',
        K3S_VM_API_PORT: '16443',
        K3S_VM_SSH_PORT: '12222',
        K3S_VM_TIMEOUT: '900',
        K3S_VM_NIX: 'vm',
        K3S_VM_K3S: '1.31',
        K3S_VM_DEBUG: 'true',
      },
      project,
    );
    expect(config).toMatchObject({
      dir: join(project, 'state'),
      name: 'ci-vm',
      cpus: 4,
      memoryMiB: 8192,
      diskSizeMiB: 30000,
      accel: 'tcg',
      keep: true,
      apiPort: 16443,
      sshPort: 12222,
      timeoutSeconds: 900,
      nix: join(project, 'vm'),
      k3sVersion: '1_31',
      debug: true,
    });
  });

  it('lets explicit options win over the environment', () => {
    const config = resolveConfig(
      { cpus: 8, keep: false, accel: 'kvm' },
      { K3S_VM_CPUS: '4', K3S_VM_KEEP: '1', K3S_VM_ACCEL: 'tcg' },
      project,
    );
    expect(config).toMatchObject({ cpus: 8, keep: false, accel: 'kvm' });
  });

  it('treats an empty variable as unset', () => {
    expect(resolveConfig({}, { K3S_VM_CPUS: '' }, project).cpus).toBe(2);
  });

  it.each([
    [{ K3S_VM_MEMORY: 'abc' }, 'K3S_VM_MEMORY="abc"', 'MiB'],
    [{ K3S_VM_MEMORY: '4G' }, 'K3S_VM_MEMORY="4G"', 'MiB'],
    [{ K3S_VM_CPUS: '0' }, 'K3S_VM_CPUS="0"', 'from 1 to 256'],
    [{ K3S_VM_CPUS: '1.5' }, 'K3S_VM_CPUS="1.5"', 'whole number'],
    [{ K3S_VM_ACCEL: 'fast' }, 'K3S_VM_ACCEL="fast"', 'auto, kvm or tcg'],
    [{ K3S_VM_KEEP: 'maybe' }, 'K3S_VM_KEEP="maybe"', '1, true'],
    [{ K3S_VM_API_PORT: '80' }, 'K3S_VM_API_PORT="80"', 'from 1024 to 65535'],
    [{ K3S_VM_SSH_PORT: '70000' }, 'K3S_VM_SSH_PORT="70000"', 'from 1024 to 65535'],
    [{ K3S_VM_TIMEOUT: '-5' }, 'K3S_VM_TIMEOUT="-5"', 'seconds'],
    [{ K3S_VM_NAME: 'My VM' }, 'K3S_VM_NAME="My VM"', 'host name'],
    [{ K3S_VM_K3S: 'latest' }, 'K3S_VM_K3S="latest"', '1.31'],
    [{ K3S_VM_NIX: 'no/such/dir' }, 'K3S_VM_NIX="no/such/dir"', 'does not exist'],
  ])('refuses %j naming the variable, the value and what is accepted', (env, named, accepted) => {
    const error = refused(env);
    expect(error.message).toContain(named);
    expect(error.message).toContain(accepted);
    expect(error.hint).toBeTruthy();
  });

  it('names the option, not a variable, when a bad value comes from code', () => {
    const error = refused({}, { memoryMiB: -1 });
    expect(error.message).toContain('option memoryMiB=-1');
  });

  it('refuses offline without the air-gap images, naming both settings (the cluster could never pull its own images)', () => {
    const error = refused({ K3S_VM_OFFLINE: '1' }, { airgapImages: false });
    expect(error.message).toMatch(/^K3S_VM_OFFLINE cuts the VM off from every registry, and option airgapImages is false: /);
    expect(error.hint).toBe('leave option airgapImages at its default (true), or turn K3S_VM_OFFLINE off');
    expect(resolveConfig({ offline: true }, {}, project)).toMatchObject({ offline: true, airgapImages: true });
    expect(resolveConfig({ airgapImages: false }, {}, project)).toMatchObject({ offline: false, airgapImages: false });
  });

  it('refuses --disable-agent among the extra K3s flags (no node would ever register)', () => {
    for (const flag of ['--disable-agent', '--disable-agent=true']) {
      const error = refused({}, { extraK3sFlags: ['--node-label=a=b', flag] });
      expect(error.message).toContain(`option extraK3sFlags holds ${JSON.stringify(flag)}: without its agent`);
      expect(error.hint).toBe(`remove ${flag} from option extraK3sFlags`);
    }
    expect(resolveConfig({ extraK3sFlags: ['--disable-agent=false'] }, {}, project).extraK3sFlags).toEqual(['--disable-agent=false']);
  });

  it('refuses the same fixed port for the API and SSH', () => {
    expect(() => resolveConfig({}, { K3S_VM_API_PORT: '20000', K3S_VM_SSH_PORT: '20000' }, project)).toThrow(/both 20000/);
  });

  it('refuses a state directory path that is a file, naming the setting as given', () => {
    writeFileSync(join(project, 'not-a-dir'), '');
    expect(() => resolveConfig({}, { K3S_VM_DIR: 'not-a-dir' }, project)).toThrow(/is not a directory/);
    const hint = (flags: FlagValues) => (catchError(() => resolveConfig({}, {}, project, flags)) as K3sVmError).hint;
    expect(hint({ dir: 'not-a-dir' })).toBe('point --dir at a directory; it is created if missing');
  });

  it('writes the missing setting of a context or a rewind the way the user gave the other', () => {
    const hint = (options: K3sVmOptions, env: Record<string, string>, flags: FlagValues = {}) =>
      (catchError(() => resolveConfig(options, env, project, flags)) as K3sVmError).hint;
    expect(hint({}, {}, { context: 'prod' })).toMatch(/\(--kubeconfig=PATH\), or leave the context out/);
    expect(hint({}, { K3S_VM_CONTEXT: 'prod' })).toMatch(/\(K3S_VM_KUBECONFIG=PATH\)/);
    expect(hint({ context: 'prod' }, {})).toMatch(/\(kubeconfig: "PATH"\)/);
    expect(hint({ rewind: 'file' }, {})).toBe('turn snapshots on too (snapshot: true), or leave the rewind out');
    expect(hint({}, { K3S_VM_REWIND: 'file' })).toBe('turn snapshots on too (K3S_VM_SNAPSHOT=1), or leave the rewind out');
  });

  it('finds the project root like npm does, and falls back to the directory itself', () => {
    expect(findProjectRoot(join(project, 'src', 'deep'))).toBe(project);
    const bare = mkdtempSync(join(tmpdir(), 'k3s-vm-bare-'));
    expect(findProjectRoot(bare)).toBe(bare);
  });

  it('keeps the cache directory under XDG_CACHE_HOME when set', () => {
    expect(resolveConfig({}, { XDG_CACHE_HOME: '/x/cache' }, project).cacheDir).toBe('/x/cache/k3s-vm');
  });
});
