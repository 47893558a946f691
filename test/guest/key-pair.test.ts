// Concurrent first runs on a fresh state directory make one key pair; no build carries it.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildCluster } from '../../src/cluster/index.js';
import { files } from '../../src/state/files.js';
import { testGuestOptions } from '../support/test-guest.js';
import { argstr, recordingNixBuild } from '../support/nix-build.js';

describe('two first runs at once', () => {
  it('make one key pair under the lock, and no build is given it (the VM gets it at boot)', async () => {
    const nixBuild = recordingNixBuild();
    const opts = testGuestOptions('faults-keys', { nixBuild: nixBuild.path });
    const builds = await Promise.all([buildCluster(opts), buildCluster(opts), buildCluster(opts)]);
    expect(new Set(builds.map((build) => build.storePath)).size).toBe(1);
    const onDisk = readFileSync(join(opts.dir, files.sshPublicKey), 'utf8').trim();
    expect(onDisk).toMatch(/^ssh-ed25519 \S+ k3s-vm@/);
    const calls = nixBuild.calls();
    expect(calls.length).toBeGreaterThan(0);
    for (const call of calls) {
      expect(argstr(call, 'sshPublicKey')).toBeUndefined();
      expect(call.join(' ')).not.toContain(onDisk.split(' ')[1]);
    }
  });
});
