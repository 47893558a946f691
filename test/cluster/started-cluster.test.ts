// The started-cluster handle, attached to the run's shared test guest: what a user of a running VM gets.
import { statSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { isRunning } from '../../src/state/process.js';
import { attachSharedGuest, sharedGuest } from '../helpers/shared-guest.js';
import { readQemuPid } from '../helpers/state-dirs.js';
import { recordingLogger } from '../helpers/test-guest.js';

describe('a started cluster (attached to the shared test guest)', () => {
  it('attaches to the running VM without booting, and stop() releases only its own hold', async () => {
    const logger = recordingLogger();
    const cluster = await attachSharedGuest({ logger });
    expect(cluster.booted).toBe(false);
    expect(logger.lines.some((line) => line.startsWith('booting '))).toBe(false);
    expect(cluster.pid).toBe(readQemuPid(sharedGuest().options.dir));
    expect(cluster.apiPort).toBe(sharedGuest().provided.apiPort);
    expect(await cluster.stop()).toEqual({ stoppedVm: false });
    expect(isRunning(cluster.pid)).toBe(true);
  });

  it('writes the kubeconfig 0600, pointing at the forwarded port', async () => {
    const cluster = await attachSharedGuest();
    try {
      expect(statSync(cluster.kubeconfigPath).mode & 0o777).toBe(0o600);
      const kc = cluster.kubeConfig();
      expect(kc.getCurrentCluster()?.server).toBe(`https://127.0.0.1:${cluster.apiPort}`);
      expect(cluster.apiServerUrl).toBe(`https://127.0.0.1:${cluster.apiPort}`);
      expect(kc.getCurrentContext()).toBe('test-guest');
    } finally {
      await cluster.stop();
    }
  });

  it('runs commands in the guest over SSH with their output and exit code', async () => {
    const cluster = await attachSharedGuest();
    try {
      expect(await cluster.exec('echo "hello from $(hostname)"; echo oops >&2; exit 7')).toMatchObject({
        stdout: 'hello from test-guest\n',
        stderr: 'oops\n',
        exitCode: 7,
      });
      // Calls in quick succession, and at once.
      const [a, b] = await Promise.all([cluster.exec('echo a'), cluster.exec('echo b')]);
      expect([a.stdout, b.stdout]).toEqual(['a\n', 'b\n']);
      const ssh = await cluster.ssh();
      try {
        expect((await ssh.exec('cat /etc/hostname')).stdout.trim()).toBe('test-guest');
      } finally {
        ssh.close();
      }
    } finally {
      await cluster.stop();
    }
  });
});
