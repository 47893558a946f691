// Faults around a kept VM (one boot shared): interruptions, a damaged kubeconfig, file permissions, the disk format, ssh's arguments.
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clusterStatus, startCluster, stopCluster } from '../../src/cluster/index.js';
import { files } from '../../src/state/files.js';
import { consumerEnv, linkPackage, qemuProcessesUsing, runIn } from '../support/consumer.js';
import { repoRoot } from '../support/test-guest.js';
import { cli, cliEnv } from '../support/cli.js';
import { seededStateDir } from '../support/seeded-state-dir.js';

const project = join(repoRoot, 'fixtures', 'consumer-vitest');
const dir = seededStateDir('faults-kept');
const env = cliEnv(dir);
const dirs = [dir];
let pid = 0;

beforeAll(async () => {
  linkPackage(project);
  const start = await cli(['start'], env);
  expect(start.code, start.err).toBe(0);
  pid = Number.parseInt(readFileSync(join(dir, files.pid), 'utf8'), 10);
});
afterAll(async () => {
  for (const each of dirs) await stopCluster({ env: cliEnv(each), force: true }).catch(() => undefined);
});

const leftovers = (folder: string) =>
  [files.pid, files.runtime, files.lock, files.kubeconfig].filter((name) => existsSync(join(folder, name)));

function modes(folder: string): Array<[string, string]> {
  const found: Array<[string, string]> = [];
  for (const entry of readdirSync(folder, { withFileTypes: true })) {
    const path = join(folder, entry.name);
    if (entry.isDirectory()) {
      found.push([path, (statSync(path).mode & 0o777).toString(8)], ...modes(path));
    } else if (entry.isFile()) {
      found.push([path, (statSync(path).mode & 0o777).toString(8)]);
    }
  }
  return found;
}

describe('a kept VM', () => {
  it('SIGINT to the process group during boot leaves the VM stopped, with no pid, runtime or lock file; SIGTERM during the tests leaves no lock', async () => {
    const booting = seededStateDir('faults-int');
    dirs.push(booting);
    // A terminal's Ctrl-C reaches the whole process group: the run gets one of its own.
    const run = execa('vitest', ['run'], {
      cwd: project,
      env: consumerEnv(booting),
      reject: false,
      all: true,
      preferLocal: true,
      localDir: repoRoot,
      stdin: 'ignore',
      detached: true,
    });
    await expect.poll(() => qemuProcessesUsing(booting).length, { timeout: 120_000, interval: 100 }).toBe(1);
    process.kill(-run.pid!, 'SIGINT');
    expect((await run).exitCode).not.toBe(0);
    await expect.poll(() => qemuProcessesUsing(booting).length, { timeout: 30_000, interval: 200 }).toBe(0);
    expect(leftovers(booting)).toEqual([]);
    // Plainly stopped: the next start has nothing to clean up.
    const status = await clusterStatus({ env: consumerEnv(booting) });
    expect(status.state, status.reasons.join('; ')).toBe('stopped');

    // SIGTERM while the tests of a run attached to the kept VM run: it lets go of the VM and leaves no lock.
    const attached = runIn(project, 'vitest', ['run', '--config', 'vitest.interrupt.config.ts'], { ...consumerEnv(dir), K3S_VM_KEEP: '1' });
    let output = '';
    attached.all?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    await expect.poll(() => output, { timeout: 120_000, interval: 100 }).toMatch(/slow test started/);
    expect(output).toMatch(new RegExp(`attached to the running VM \\(pid ${pid}`));
    attached.kill('SIGTERM');
    await attached;
    expect(existsSync(join(dir, files.lock))).toBe(false);
    expect(readdirSync(join(dir, files.leasesDir))).toEqual([]);
    expect((await clusterStatus({ env })).state).toBe('running');
  });

  it('a damaged or emptied kubeconfig is refused by `kubeconfig`, fetched again over SSH by the next run, and keep is kept', async () => {
    for (const damage of ['{"apiVersion": "v1", "clusters": [', '']) {
      writeFileSync(join(dir, files.kubeconfig), damage);
      const shown = await cli(['kubeconfig'], env);
      expect(shown.code).toBe(1);
      expect(shown.out).toBe('');
      expect(shown.err).toMatch(/error: .*kubeconfig is damaged/);
      expect(shown.err).toMatch(/hint: .*k3s-vm start/);

      const cluster = await startCluster({ env, cwd: dir });
      expect(cluster.booted).toBe(false);
      expect(cluster.pid).toBe(pid);
      await cluster.stop();
      // The run did not start the VM and did not make it unkept: it is still up.
      expect(JSON.parse(readFileSync(join(dir, files.runtime), 'utf8'))).toMatchObject({ pid, keep: true });
      const again = await cli(['kubeconfig'], env);
      expect(again.code, again.err).toBe(0);
      expect(again.out).toContain('https://127.0.0.1:');
    }
    const status = await cli(['status', '--json'], env);
    expect(JSON.parse(status.out)).toMatchObject({ state: 'running', pid, kept: true });
  });

  it('every file in the state directory is 0600 and every folder 0700, disk.qcow2 included', () => {
    const all = modes(dir);
    expect(all.map(([path]) => path)).toContain(join(dir, files.disk));
    const wrong = all.filter(([path, mode]) => mode !== (statSync(path).isDirectory() ? '700' : '600'));
    expect(wrong).toEqual([]);
  });

  it('`ssh -- command < file` passes standard input to the command, as OpenSSH does; a command that does not read it ends anyway', async () => {
    const bin = join(repoRoot, 'dist', 'adapters', 'cli', 'bin.js');
    const input = join(dir, 'stdin-input');
    const content = `${'line of input\n'.repeat(5000)}no newline at the end`;
    writeFileSync(input, content);
    const copied = await execa('node', [bin, 'ssh', '--', 'cat > /tmp/from-stdin && wc -c < /tmp/from-stdin'], {
      env,
      inputFile: input,
      reject: false,
    });
    expect(copied.exitCode, copied.stderr).toBe(0);
    expect(copied.stdout.trim()).toBe(String(Buffer.byteLength(content)));
    expect((await cli(['ssh', '--', 'md5sum < /tmp/from-stdin'], env)).out.split(' ')[0]).toBe(
      createHash('md5').update(content).digest('hex'),
    );
    // Standard input open and never written to (a pipe nobody ends, a terminal): the command's end is the end.
    const child = execa('node', [bin, 'ssh', '--', 'echo done'], { env, reject: false, timeout: 60_000 });
    const ended = await child;
    expect(ended.timedOut).toBe(false);
    expect(ended.stdout).toBe('done');
  });

  it('QEMU is told that the disk is qcow2 instead of guessing', () => {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    expect(argv.join(' ')).toContain('-set drive.drive1.format=qcow2');
  });

  it('`ssh -- sh -c "exit 7"` exits 7, and each argument reaches the guest as it was given', async () => {
    expect((await cli(['ssh', '--', 'sh', '-c', 'exit 7'], env)).code).toBe(7);
    const printed = await cli(['ssh', '--', 'printf', '%s|', 'a b', "c'd", '$HOME', '*'], env);
    expect(printed.code, printed.err).toBe(0);
    expect(printed.out).toBe("a b|c'd|$HOME|*|");
    // One argument stays a command line for the guest's shell.
    const line = await cli(['ssh', '--', 'echo $((3 + 4)); exit 5'], env);
    expect(line.out).toBe('7\n');
    expect(line.code).toBe(5);
  });
});
