// What can be refused is refused before the Nix build: a busy port, a KVM known dead, a bad option value.
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startCluster } from '../../src/cluster/index.js';
import { currentBootId } from '../../src/qemu/accel-probe.js';
import { freshStateDir, testGuestOptions } from '../support/test-guest.js';
import { recordingNixBuild } from '../support/nix-build.js';

describe('a start that cannot succeed', () => {
  it('is refused before nix-build runs', async () => {
    const nixBuild = recordingNixBuild();
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const busy = (server.address() as { port: number }).port;
    try {
      const port = await startCluster(testGuestOptions('faults-port', { nixBuild: nixBuild.path, apiPort: busy })).catch((e: unknown) => e);
      expect(port).toMatchObject({ code: 'PORT_IN_USE', message: expect.stringContaining(`apiPort: ${busy}: port ${busy}`) });
    } finally {
      server.close();
    }

    const cache = freshStateDir('faults-cache');
    mkdirSync(join(cache, 'k3s-vm'), { recursive: true });
    const deadKvm = { usable: false, reason: 'the probe did not finish under KVM', durationMs: 2000, bootId: await currentBootId() };
    writeFileSync(join(cache, 'k3s-vm', 'kvm-probe.json'), JSON.stringify(deadKvm));
    const kvm = await startCluster(
      testGuestOptions('faults-kvm', { nixBuild: nixBuild.path, accel: 'kvm', env: { PATH: process.env['PATH'], XDG_CACHE_HOME: cache } }),
    ).catch((e: unknown) => e);
    expect(kvm).toMatchObject({ code: 'KVM_UNUSABLE' });

    for (const bad of [{ memoryMiB: -5 }, { env: { PATH: process.env['PATH'], K3S_VM_CPUS: 'two' } }, { kernelParams: ['a b'] }]) {
      const error = await startCluster(testGuestOptions('faults-bad', { nixBuild: nixBuild.path, ...bad })).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'CONFIG_INVALID' });
    }
    expect(nixBuild.calls()).toEqual([]);
  });
});
