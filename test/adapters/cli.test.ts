// The command line: in-process through run(argv, io), and the real bin against the test guest.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { run } from '../../src/adapters/cli/run.js';
import type { CliIo } from '../../src/adapters/cli/io.js';
import { stopCluster } from '../../src/cluster/index.js';
import { files } from '../../src/state/files.js';
import { isRunning } from '../../src/state/process.js';
import { nixpkgsPath } from '../helpers/host.js';
import { freshStateDir, repoRoot, testGuestNix } from '../helpers/test-guest.js';

function memoryIo(env: Record<string, string> = {}, cwd = repoRoot): CliIo & { out: () => string; err: () => string } {
  let out = '';
  let err = '';
  return {
    stdout: { write: (chunk: string) => (out += chunk) },
    stderr: { write: (chunk: string) => (err += chunk) },
    env,
    cwd,
    interactive: false,
    out: () => out,
    err: () => err,
  };
}

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
    const code = await run(['doctor'], withGuest);
    for (const check of ['Nix', 'nixpkgs', 'QEMU', 'qemu-img', 'KVM', 'state directory']) {
      expect(withGuest.out()).toMatch(new RegExp(`^(ok  |warn|FAIL) ${check} `, 'm'));
    }
    // The test guest needs no nixpkgs, so its absence is only a warning there.
    expect(withGuest.out()).not.toMatch(/^FAIL nixpkgs/m);
    expect(code).toBe(withGuest.out().includes('FAIL') ? 1 : 0);
    // The package's own VM builds from the pinned nixpkgs: doctor names it and says whether it is here.
    const packageVm = memoryIo({ K3S_VM_DIR: dir });
    await run(['doctor'], packageVm);
    expect(packageVm.out()).toMatch(/^(ok  |warn) nixpkgs +nixpkgs [0-9a-f]{40} \(nixos-[0-9.]+, pinned\): (in the Nix store|not in the Nix store yet)/m);
    const searchPath = memoryIo({ K3S_VM_DIR: dir, K3S_VM_NIXPKGS: '<nixpkgs>' });
    await run(['doctor'], searchPath);
    expect(searchPath.out()).toMatch(nixpkgsPath() ? /^ok   nixpkgs +<nixpkgs> from the Nix search path/m : /^warn nixpkgs +<nixpkgs> from the Nix search path, which is not set/m);
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

describe('the k3s-vm bin against the test guest', () => {
  const dir = freshStateDir('cli-bin');
  const bin = join(repoRoot, 'dist', 'adapters', 'cli', 'bin.js');
  const env = { K3S_VM_DIR: dir, K3S_VM_NIX: testGuestNix, K3S_VM_NAME: 'cli-guest', K3S_VM_ACCEL: 'tcg', K3S_VM_MEMORY: '1024', K3S_VM_DISK_SIZE: '2048', NO_COLOR: '1' };
  const k3sVm = (...args: string[]) => execa(process.execPath, [bin, ...args], { env, reject: false, cwd: repoRoot, stdin: 'ignore' });
  afterAll(() => stopCluster({ dir, env: {}, force: true }).catch(() => undefined));

  it('start, status --json, kubectl get nodes, ssh -- command, stop, reset', async () => {
    const start = await k3sVm('start');
    expect(start.exitCode, start.stderr).toBe(0);
    expect(start.stdout.trim()).toBe(join(dir, files.kubeconfig));
    expect(start.stderr).toMatch(/cluster ready/);

    const status = await k3sVm('status', '--json');
    expect(status.exitCode).toBe(0);
    const report = JSON.parse(status.stdout);
    expect(report).toMatchObject({ name: 'cli-guest', state: 'running', accel: 'tcg', k3sReady: true, kept: true, kubeconfigPath: join(dir, files.kubeconfig) });
    expect(isRunning(report.pid)).toBe(true);

    const kubectl = await k3sVm('kubectl', 'get', 'nodes', '-o', 'name');
    expect(kubectl.exitCode, kubectl.stderr).toBe(0);
    expect(kubectl.stdout.trim()).toBe('node/cli-guest');

    const ssh = await k3sVm('ssh', '--', 'cat /etc/hostname; exit 5');
    expect(ssh.stdout).toBe('cli-guest');
    expect(ssh.exitCode).toBe(5);

    const noKubectl = await execa(process.execPath, [bin, 'kubectl', 'get', 'nodes'], { env: { ...env, PATH: '/nonexistent' }, reject: false, cwd: repoRoot, stdin: 'ignore' });
    expect(noKubectl.exitCode).toBe(1);
    expect(noKubectl.stderr).toMatch(/^error: kubectl was not found on PATH\nhint: kubectl is not installed: /m);

    // An interactive shell, through a pseudo-terminal (script(1)), with its exit code.
    const shell = await execa('script', ['-qec', `${process.execPath} ${bin} ssh`, '/dev/null'], { env, reject: false, cwd: repoRoot, input: 'echo "in $(hostname)"\nexit 4\n' });
    expect(shell.stdout).toMatch(/in cli-guest/);
    expect(shell.exitCode).toBe(4);

    // logs --follow keeps printing until Ctrl-C, then exits 0.
    const follow = execa(process.execPath, [bin, 'logs', '--follow'], { env, reject: false, cwd: repoRoot, stdin: 'ignore' });
    let followed = '';
    follow.stdout?.on('data', (chunk: Buffer) => (followed += chunk.toString()));
    await expect.poll(() => followed, { timeout: 10_000 }).toMatch(/test-guest/);
    await k3sVm('ssh', '--', 'echo followed-line-$((6*7)) > /dev/console');
    await expect.poll(() => followed, { timeout: 10_000 }).toMatch(/followed-line-42/);
    follow.kill('SIGINT');
    expect((await follow).exitCode).toBe(0);

    const kubeconfig = await k3sVm('kubeconfig', '--path');
    expect(kubeconfig.stdout.trim()).toBe(join(dir, files.kubeconfig));
    const logs = await k3sVm('logs');
    expect(logs.stdout).toMatch(/test-guest/);

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
