// Readies the real-Kubernetes test suite's guest (vitest.real.config.ts): boots it once in the
// suite's kept state directory with snapshots on, so that its ready-state snapshot is saved,
// then stops it. The suite then restores that snapshot instead of booting the control plane
// cold; a guest whose build changed since boots cold again, as any snapshot user's would.
// Part of the install (`npm run setup:real`); where the guest cannot run here it says why in
// one line and leaves everything else installed. Run after `npm run build`.
import '../bench/typescript-imports.ts';
import { startCluster } from '../dist/index.js';

// Imported once the hook above is in place (static imports are all resolved before it runs).
const { realGuestStateDir, realGuestUnavailable, suiteRealGuestOptions } = await import('../test/support/real-guest.ts');

const say = (line: string) => process.stderr.write(`setup:real: ${line}\n`);

const unavailable = realGuestUnavailable();
if (unavailable) {
  say(`the real-Kubernetes test guest is not prepared: ${unavailable}; the rest of the install stands`);
} else {
  const started = Date.now();
  say(`readying the real-Kubernetes test guest in ${realGuestStateDir} (a cold boot under emulation takes minutes)`);
  try {
    const cluster = await startCluster({
      ...suiteRealGuestOptions(),
      logger: { progress: say, warn: (line) => say(`warning: ${line}`), debug: () => undefined },
    });
    await cluster.stop();
    say(`ready in ${((Date.now() - started) / 1000).toFixed(1)} s: the suite restores its snapshot`);
  } catch (error) {
    say(`the real-Kubernetes test guest did not start: ${(error as Error).message}`);
    process.exitCode = 1;
  }
}
