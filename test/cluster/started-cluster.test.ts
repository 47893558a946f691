// The started-cluster handle, attached to the run's shared test guest: what a user of a running VM gets.
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { StartedCluster } from '../../src/cluster/index.js';
import { SharedSsh } from '../../src/guest/ssh.js';
import { files } from '../../src/state/files.js';
import { isRunning } from '../../src/state/process.js';
import { attachSharedGuest, sharedGuest } from '../support/shared-guest.js';
import { readQemuPid } from '../support/state-dirs.js';
import { recordingLogger } from '../support/test-guest.js';

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
      // Calls at once, many times over. The guest's dropbear ends a connection that opens a
      // session beside a busy one now and then (one round in thirteen here, so twenty rounds
      // meet it four times in five), failing every command on it.
      const before = await assertionsInSshdLog(cluster);
      // A new shared shell each round, as each started cluster has: its first connection is new.
      const target = { port: cluster.sshPort, privateKey: readFileSync(join(sharedGuest().options.dir, files.sshKey), 'utf8') };
      for (let round = 0; round < 20; round++) {
        const shell = new SharedSsh(target);
        try {
          expect((await shell.exec('echo first')).stdout).toBe('first\n');
          const results = await Promise.all(['a', 'b', 'c'].map((word) => shell.exec(`echo ${word}${round}`)));
          expect(results.map((result) => result.stdout)).toEqual([`a${round}\n`, `b${round}\n`, `c${round}\n`]);
        } finally {
          shell.close();
        }
      }
      expect(await assertionsInSshdLog(cluster)).toBe(before);
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

/** How many times the guest's dropbear has ended a connection on a failed assertion. */
async function assertionsInSshdLog(cluster: StartedCluster): Promise<number> {
  const result = await cluster.exec("grep -c 'Failed assertion' /var/log/sshd.log || true");
  return Number(result.stdout.trim());
}
