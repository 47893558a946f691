// The command line: in-process through run(argv, io), and the real bin against the test guest.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { run } from '../../src/adapters/cli/run.js';
import { files } from '../../src/state/files.js';
import { isRunning } from '../../src/state/process.js';
import { memoryIo } from '../support/cli.js';
import { envWithoutK3sVm } from '../support/consumer.js';
import { nixpkgsPath } from '../support/host.js';
import { sharedGuest } from '../support/shared-guest.js';
import { readQemuPid, useStateDirs } from '../support/state-dirs.js';
import { freshStateDir, repoRoot, testGuestNix } from '../support/test-guest.js';

const dirs = useStateDirs();

describe('k3s-vm in-process', () => {
  it('prints usage and exits 2 without a command, and 0 with --help', async () => {
    const io = memoryIo();
    expect(await run([], io)).toBe(2);
    expect(io.err()).toMatch(/^Usage: k3s-vm <command>/);
    const help = memoryIo();
    expect(await run(['--help'], help)).toBe(0);
    for (const command of ['setup', 'start', 'stop', 'status', 'reset', 'ssh', 'kubeconfig', 'logs', 'kubectl', 'doctor']) {
      expect(help.out()).toMatch(new RegExp(`^  ${command} `, 'm'));
    }
  });

  it('prints the version from package.json', async () => {
    const io = memoryIo();
    expect(await run(['--version'], io)).toBe(0);
    expect(io.out().trim()).toBe(JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')).version);
  });

  it('refuses an unknown command or flag with usage and exit 2', async () => {
    const unknown = memoryIo();
    expect(await run(['launch'], unknown)).toBe(2);
    expect(unknown.err()).toMatch(/unknown command "launch"/);
    const flag = memoryIo();
    expect(await run(['status', '--colour'], flag)).toBe(2);
    expect(flag.err()).toMatch(/Unknown option '--colour'/);
    expect(flag.err()).toMatch(/Usage: k3s-vm status/);
  });

  it('refuses a bad variable or flag before doing anything, with the hint on its own line', async () => {
    const dir = join(freshStateDir('cli-bad'), 'never-created');
    const io = memoryIo({ K3S_VM_DIR: dir, K3S_VM_CPUS: '0' });
    expect(await run(['start'], io)).toBe(2);
    expect(io.err()).toMatch(/^error: K3S_VM_CPUS="0" is not valid: expected a whole number of CPUs from 1 to 256$/m);
    expect(io.err()).toMatch(/^hint: fix or unset K3S_VM_CPUS$/m);
    expect(existsSync(dir)).toBe(false);
    const flag = memoryIo({ K3S_VM_DIR: dir });
    expect(await run(['status', '--memory', 'lots'], flag)).toBe(2);
    expect(flag.err()).toMatch(/^error: --memory="lots" is not valid: expected a whole number of MiB, at least 1024/m);
    expect(flag.err()).toMatch(/^hint: fix the value of --memory, or leave the flag out$/m);
  });

  it('names a setting in its messages as it was given: the flag, else the variable', async () => {
    const dir = freshStateDir('cli-names');
    const kubeconfig = join(dir, 'elsewhere.yaml');
    writeFileSync(kubeconfig, 'apiVersion: v1\nkind: Config\n');
    const flag = memoryIo({ K3S_VM_DIR: dir });
    expect(await run(['start', '--kubeconfig', kubeconfig], flag)).toBe(2);
    expect(flag.err()).toMatch(/^error: there is no VM to start: --kubeconfig names an existing cluster/m);
    expect(flag.err()).toMatch(/^hint: leave --kubeconfig out to boot a VM/m);
    expect(flag.err()).not.toMatch(/K3S_VM_KUBECONFIG/);
    const variable = memoryIo({ K3S_VM_DIR: dir, K3S_VM_KUBECONFIG: kubeconfig });
    expect(await run(['start'], variable)).toBe(2);
    expect(variable.err()).toMatch(/^error: there is no VM to start: K3S_VM_KUBECONFIG names an existing cluster/m);
  });

  it('says the VM is not running with exit code 3', async () => {
    const dir = freshStateDir('cli-stopped');
    const io = memoryIo({ K3S_VM_DIR: dir });
    expect(await run(['status', '--json'], io)).toBe(3);
    expect(JSON.parse(io.out())).toMatchObject({ state: 'stopped', pid: null, k3sReady: false, dir });
    const kubectl = memoryIo({ K3S_VM_DIR: dir });
    expect(await run(['kubectl', 'get', 'nodes'], kubectl)).toBe(3);
    expect(kubectl.err()).toMatch(/the VM is not running\nhint: start it with: npx k3s-vm start/);
  });

  it('works from a subdirectory of the project, finding the root as npm does', async () => {
    const project = freshStateDir('cli-project');
    writeFileSync(join(project, 'package.json'), '{}');
    mkdirSync(join(project, 'src', 'deep'), { recursive: true });
    const io = memoryIo({}, join(project, 'src', 'deep'));
    await run(['status', '--json'], io);
    expect(JSON.parse(io.out()).dir).toBe(join(project, '.k3s-vm'));
  });

  it('doctor checks Nix, nixpkgs, QEMU, KVM and the state directory', async () => {
    const dir = freshStateDir('cli-doctor');
    const withGuest = memoryIo({ K3S_VM_DIR: dir, K3S_VM_NIX: testGuestNix });
    // The package's own VM builds from the pinned nixpkgs: doctor names it and says whether it is here.
    const packageVm = memoryIo({ K3S_VM_DIR: dir });
    const searchPath = memoryIo({ K3S_VM_DIR: dir, K3S_VM_NIXPKGS: '<nixpkgs>' });
    // Each doctor probes KVM afresh: run the three at once.
    const [code] = await Promise.all([run(['doctor'], withGuest), run(['doctor'], packageVm), run(['doctor'], searchPath)]);
    for (const check of ['Nix', 'QEMU', 'qemu-img', 'KVM', 'state directory']) {
      expect(withGuest.out()).toMatch(new RegExp(`^(ok {2}|warn|FAIL) ${check} `, 'm'));
    }
    // Only the package's own expression takes nixpkgs: the test guest brings its own, so there is no check for it.
    expect(withGuest.out()).not.toMatch(/^\S+ +nixpkgs /m);
    expect(code).toBe(withGuest.out().includes('FAIL') ? 1 : 0);
    expect(packageVm.out()).toMatch(
      /^(ok {2}|warn) nixpkgs +nixpkgs [0-9a-f]{40} \(nixos-[0-9.]+, pinned(?: without a sha256: Nix checks the download again hourly)?\): (in the Nix store|not in the Nix store yet)/m,
    );
    expect(searchPath.out()).toMatch(
      nixpkgsPath()
        ? /^ok {3}nixpkgs +<nixpkgs> from the Nix search path/m
        : /^warn nixpkgs +<nixpkgs> from the Nix search path, which is not set/m,
    );
  });

  it('never colours output when NO_COLOR is set', async () => {
    const io = { ...memoryIo({ NO_COLOR: '1' }), interactive: true };
    let err = '';
    await run(['launch'], { ...io, stderr: { write: (c: string) => (err += c) } });
    expect(err).not.toMatch(/\x1b\[/);
    let coloured = '';
    await run(['launch'], { ...io, env: {}, stderr: { write: (c: string) => (coloured += c) } });
    expect(coloured).toMatch(/\x1b\[31merror:/);
  });
});

const bin = join(repoRoot, 'dist', 'adapters', 'cli', 'bin.js');

/** The bin's environment for a VM of the test guest in `dir`: nothing from the developer's K3S_VM_* variables. */
function binEnv(dir: string, name: string): Record<string, string> {
  return {
    ...envWithoutK3sVm(),
    K3S_VM_DIR: dir,
    K3S_VM_NIX: testGuestNix,
    K3S_VM_NAME: name,
    K3S_VM_ACCEL: 'tcg',
    K3S_VM_MEMORY: '1024',
    K3S_VM_DISK_SIZE: '2048',
    K3S_VM_TIMEOUT: '240',
    NO_COLOR: '1',
  };
}

function runBin(env: Record<string, string>) {
  return (...args: string[]) =>
    execa(process.execPath, [bin, ...args], { env, extendEnv: false, reject: false, cwd: repoRoot, stdin: 'ignore' });
}

describe('the k3s-vm bin against the shared test guest', () => {
  const shared = () => sharedGuest().options;
  const env = () => binEnv(shared().dir, 'test-guest');
  const k3sVm = (...args: string[]) => runBin(env())(...args);

  it('status --json reports the running VM that a test run started (not kept)', async () => {
    const status = await k3sVm('status', '--json');
    expect(status.exitCode, status.stderr).toBe(0);
    const report = JSON.parse(status.stdout);
    expect(report).toMatchObject({
      name: 'test-guest',
      state: 'running',
      accel: 'tcg',
      k3sReady: true,
      kept: false,
      kubeconfigPath: join(shared().dir, files.kubeconfig),
    });
    expect(report.pid).toBe(readQemuPid(shared().dir));
  });

  it('kubectl runs against the VM, and says how to get kubectl when it is missing', async () => {
    const kubectl = await k3sVm('kubectl', 'get', 'nodes', '-o', 'name');
    expect(kubectl.exitCode, kubectl.stderr).toBe(0);
    expect(kubectl.stdout.trim()).toBe('node/test-guest');

    const noKubectl = await runBin({ ...env(), PATH: '/nonexistent' })('kubectl', 'get', 'nodes');
    expect(noKubectl.exitCode).toBe(1);
    expect(noKubectl.stderr).toMatch(/^error: kubectl was not found on PATH\nhint: kubectl is not installed: /m);
  });

  it('ssh runs a command with its output and exit code, or an interactive shell', async () => {
    const ssh = await k3sVm('ssh', '--', 'cat /etc/hostname; exit 5');
    expect(ssh.stdout).toBe('test-guest');
    expect(ssh.exitCode).toBe(5);

    // An interactive shell, through a pseudo-terminal (script(1)), with its exit code.
    const shell = await execa('script', ['-qec', `${process.execPath} ${bin} ssh`, '/dev/null'], {
      env: env(),
      extendEnv: false,
      reject: false,
      cwd: repoRoot,
      input: 'echo "in $(hostname)"\nexit 4\n',
    });
    expect(shell.stdout).toMatch(/in test-guest/);
    expect(shell.exitCode).toBe(4);
  });

  it('logs prints the serial log, and --follow keeps printing until Ctrl-C', async () => {
    const logs = await k3sVm('logs');
    expect(logs.exitCode).toBe(0);
    expect(logs.stdout).toMatch(/test-guest/);

    const follow = execa(process.execPath, [bin, 'logs', '--follow'], {
      env: env(),
      extendEnv: false,
      reject: false,
      cwd: repoRoot,
      stdin: 'ignore',
    });
    let followed = '';
    follow.stdout?.on('data', (chunk: Buffer) => (followed += chunk.toString()));
    await expect.poll(() => followed, { timeout: 10_000 }).toMatch(/test-guest/);
    await k3sVm('ssh', '--', 'echo followed-line-$((6*7)) > /dev/console');
    await expect.poll(() => followed, { timeout: 10_000 }).toMatch(/followed-line-42/);
    follow.kill('SIGINT');
    expect((await follow).exitCode).toBe(0);
  });

  it('kubeconfig --path prints where the kubeconfig is', async () => {
    const kubeconfig = await k3sVm('kubeconfig', '--path');
    expect(kubeconfig.exitCode).toBe(0);
    expect(kubeconfig.stdout.trim()).toBe(join(shared().dir, files.kubeconfig));
  });
});

describe('the k3s-vm bin with a VM of its own', () => {
  it('start, status --json, stop and reset; reset refuses a running VM', async () => {
    const dir = dirs.fresh('cli-bin');
    const k3sVm = runBin(binEnv(dir, 'cli-guest'));
    const start = await k3sVm('start');
    expect(start.exitCode, start.stderr).toBe(0);
    expect(start.stdout.trim()).toBe(join(dir, files.kubeconfig));
    expect(start.stderr).toMatch(/cluster ready/);

    const status = await k3sVm('status', '--json');
    expect(status.exitCode).toBe(0);
    const report = JSON.parse(status.stdout);
    expect(report).toMatchObject({
      name: 'cli-guest',
      state: 'running',
      accel: 'tcg',
      k3sReady: true,
      kept: true,
      kubeconfigPath: join(dir, files.kubeconfig),
    });
    expect(isRunning(report.pid)).toBe(true);

    const refused = await k3sVm('reset');
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toMatch(/hint: stop it first/);

    const stop = await k3sVm('stop');
    expect(stop.exitCode, stop.stderr).toBe(0);
    expect(isRunning(report.pid)).toBe(false);
    expect((await k3sVm('status')).exitCode).toBe(3);

    const reset = await k3sVm('reset');
    expect(reset.exitCode, reset.stderr).toBe(0);
    expect(existsSync(join(dir, files.disk))).toBe(false);
    expect(existsSync(join(dir, files.sshKey))).toBe(true);
  });
});
