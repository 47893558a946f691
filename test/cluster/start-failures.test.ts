// How a start fails: every failure names what went wrong and leaves nothing running.
import { spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { startCluster, stopCluster } from '../../src/cluster/index.js';
import { timeoutMsFor } from '../../src/config/defaults.js';
import { chooseAccel } from '../../src/qemu/accel.js';
import { resolveConfig } from '../../src/config/resolve-config.js';
import { K3sVmError } from '../../src/errors.js';
import { probeKvm } from '../../src/qemu/accel-probe.js';
import { files } from '../../src/state/files.js';
import { InstanceDir } from '../../src/state/instance-dir.js';
import { isRunning } from '../../src/state/process.js';
import { scriptVm } from '../helpers/script-vm.js';
import { recordingLogger, repoRoot, testGuestNix, testGuestOptions } from '../helpers/test-guest.js';

const dirs: string[] = [];
const children: Array<{ kill(): boolean }> = [];
afterAll(async () => {
  children.forEach((child) => child.kill());
  for (const dir of dirs) await stopCluster({ dir, env: {}, force: true }).catch(() => undefined);
});

function options(label: string, nix: string, extra: Record<string, unknown> = {}) {
  const result = testGuestOptions(label, { nix, ...extra });
  dirs.push(result.dir);
  return result;
}

describe('a start that fails', () => {
  it('ends the wait at once when the VM exits, with the serial log in the error', async () => {
    const nix = scriptVm('exits', 'echo "guest: cannot mount the root disk"; echo "Kernel panic - not syncing"; exit 1');
    const opts = options('exits', nix, { timeoutSeconds: 600 });
    const started = Date.now();
    const error = (await startCluster(opts).catch((e: unknown) => e)) as K3sVmError;
    expect(error).toBeInstanceOf(K3sVmError);
    expect(error.code).toBe('QEMU_EXITED');
    expect(error.message).toMatch(/the VM stopped while waiting for step 1 of 7 "SSH answers": QEMU \(pid \d+\) exited with code 1/);
    expect(error.details).toMatch(/\| guest: cannot mount the root disk\n\s+\| Kernel panic - not syncing/);
    // Far from the 600 s deadline: the exit was noticed, not waited out.
    expect(Date.now() - started).toBeLessThan(600_000);
    expect(new InstanceDir(opts.dir).exists(files.pid)).toBe(false);
  });

  it('gives up on SSH at the deadline, stops the VM and shows the serial log', async () => {
    const nix = scriptVm('silent', 'echo "guest: waiting forever"; exec sh -c "sleep 600" run-vm $QEMU_OPTS');
    const opts = options('silent', nix, { timeoutSeconds: 3 });
    const error = (await startCluster(opts).catch((e: unknown) => e)) as K3sVmError;
    expect(error.code).toBe('NOT_READY');
    expect(error.message).toMatch(/^K3s not ready before the deadline \(step 1 of 7 "SSH answers", waited \d+ s\); last error: /);
    expect(error.details).toMatch(/guest: waiting forever/);
    expect(error.hint).toMatch(/K3S_VM_TIMEOUT/);
    const runtime = new InstanceDir(opts.dir);
    expect(runtime.exists(files.pid)).toBe(false);
  });

  it('with K3S_VM_ACCEL=kvm, refuses an unusable KVM and says how to fix it', async (context) => {
    const probe = await probeKvm();
    const config = resolveConfig({ projectRoot: repoRoot, accel: 'kvm' }, {});
    if (probe.usable) {
      console.log('KVM works on this host: kvm is chosen instead of refused');
      expect(await chooseAccel({ ...config, logger: recordingLogger() })).toBe('kvm');
      context.skip();
    }
    const error = (await chooseAccel({ ...config, logger: recordingLogger() }).catch((e: unknown) => e)) as K3sVmError;
    expect(error.code).toBe('KVM_UNUSABLE');
    expect(error.message).toContain(probe.reason);
    expect(error.hint).toContain('/etc/udev/rules.d/99-kvm4all.rules');
  });

  it('falls back to emulation with a warning under auto, and scales the deadline', async () => {
    const probe = await probeKvm();
    const logger = recordingLogger();
    const config = resolveConfig({ projectRoot: repoRoot }, {});
    const accel = await chooseAccel({ ...config, logger });
    expect(accel).toBe(probe.usable ? 'kvm' : 'tcg');
    if (!probe.usable) expect(logger.lines.join('\n')).toMatch(/^warning: KVM is not usable .*falling back to software emulation/m);
    expect(timeoutMsFor(config.timeoutSeconds, 'tcg')).toBe(3 * timeoutMsFor(config.timeoutSeconds, 'kvm'));
    expect(timeoutMsFor(resolveConfig({ projectRoot: repoRoot, timeoutSeconds: 42 }, {}).timeoutSeconds, 'tcg')).toBe(42_000);
  });

  it('never signals an unrelated process that a stale pid file names', async () => {
    const opts = options('stale', scriptVm('stale', 'exit 0'));
    const unrelated = spawn('sleep', ['300']);
    children.push(unrelated);
    const dir = new InstanceDir(opts.dir);
    await dir.ensure();
    await dir.writeAtomic(files.pid, `${unrelated.pid}\n`);
    const result = await stopCluster(opts);
    expect(result.previous).toBe('broken');
    expect(isRunning(unrelated.pid!)).toBe(true);
    expect(dir.exists(files.pid)).toBe(false);
  });
});

describe('readiness on the test guest', () => {
  it('names the step that did not pass, its last error and the serial log', async () => {
    const opts = options('not-ready', testGuestNix, { kernelParams: ['k3s_fake.node_ready_delay_ms=3600000'], timeoutSeconds: 40 });
    const error = (await startCluster(opts).catch((e: unknown) => e)) as K3sVmError;
    expect(error.code).toBe('NOT_READY');
    expect(error.message).toMatch(/^K3s not ready before the deadline \(step 5 of 7 "node Ready", waited \d+ s\); last error: node test-guest is not Ready \(KubeletNotReady/);
    expect(error.details).toMatch(/last lines of the serial console/);
    expect(error.hint).toMatch(/kubectl describe nodes/);
    expect(new InstanceDir(opts.dir).exists(files.pid)).toBe(false);
  });

  it('ends at once when QEMU dies during the readiness steps', async () => {
    const logger = recordingLogger();
    const opts = options('dies', testGuestNix, { kernelParams: ['k3s_fake.node_ready_delay_ms=3600000'], timeoutSeconds: 600, logger });
    const starting = startCluster(opts).catch((e: unknown) => e);
    await expect.poll(() => logger.lines.some((l) => l.includes('"API /readyz ok"')), { timeout: 120_000, interval: 100 }).toBe(true);
    const pid = Number.parseInt((await new InstanceDir(opts.dir).readText(files.pid)) ?? '', 10);
    process.kill(pid, 'SIGKILL');
    const error = (await starting) as K3sVmError;
    expect(error.code).toBe('QEMU_EXITED');
    expect(error.message).toMatch(/^the VM stopped while waiting for step 5 of 7 "node Ready": QEMU \(pid \d+\) exited/);
  });

  it('writes the kubeconfig 0600, pointing at the forwarded port', async () => {
    const opts = options('kubeconfig', testGuestNix);
    const cluster = await startCluster(opts);
    try {
      expect(statSync(cluster.kubeconfigPath).mode & 0o777).toBe(0o600);
      const kc = cluster.kubeConfig();
      expect(kc.getCurrentCluster()?.server).toBe(`https://127.0.0.1:${cluster.apiPort}`);
      expect(kc.getCurrentContext()).toBe('test-guest');
    } finally {
      await cluster.stop();
    }
  });
});
