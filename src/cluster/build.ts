// Build: make the VM image with Nix (or confirm the last build is current); nothing is started.
import { buildParameters } from '../config/fingerprint.js';
import { ensureKeyPair } from '../guest/keys.js';
import { buildVm, type BuildResult } from '../nix/build-vm.js';
import { withLock } from '../state/lock.js';
import type { ClusterOptions } from './options.js';
import { buildLockTimeoutMs, prepare } from './prepare.js';

export type { BuildResult } from '../nix/build-vm.js';

export async function buildCluster(options: ClusterOptions & { force?: boolean } = {}): Promise<BuildResult> {
  const { config, dir, logger } = await prepare(options);
  const onWait = (pid: number) => logger.progress(`waiting for process ${pid}, which is using the VM`);
  return withLock(dir, { timeoutMs: buildLockTimeoutMs, signal: options.signal, onWait }, async () => {
    // Under the lock: two first runs must not each make a key pair. (The build does not use
    // it: the key reaches the VM at boot; setup makes it so that the first start need not.)
    await ensureKeyPair(dir, `k3s-vm@${config.name}`);
    return buildVm(dir, {
      nix: config.nix,
      parameters: buildParameters(config),
      nixBuild: config.nixBuild,
      names: config.names,
      logger,
      signal: options.signal,
      force: options.force ?? false,
    });
  });
}
