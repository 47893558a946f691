// The consumer projects' VM restored instead of booted. The suite's global setup boots the test
// guest once as a consumer run would (consumerEnv with snapshots on) and keeps the stopped state
// directory, ready-state snapshot included; a test whose subject is not the cold boot starts its
// consumer runs from a copy of it, so their first start is a restore (about 2 s of emulation
// instead of 10–15).
import { cpSync, existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { inject } from 'vitest';
import { startCluster } from '../../src/cluster/index.js';
import { files } from '../../src/state/files.js';
import { consumerEnv, consumerVitestProject } from './consumer.js';
import { seededStateDir } from './seeded-state-dir.js';
import type { RecordingLogger } from './test-guest.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The stopped state directory whose snapshot consumer runs restore (test/support/shared-guest-setup.ts). */
    consumerSnapshot: string;
  }
}

/** What a consumer run restores from the template: snapshots on, the rest as consumerEnv gives it. */
export function snapshotConsumerEnv(dir: string, extra: Record<string, string> = {}): Record<string, string> {
  return consumerEnv(dir, { K3S_VM_SNAPSHOT: '1', ...extra });
}

/**
 * Boots the consumers' test guest once with snapshots on, stops it, and returns its state
 * directory. It is inside a directory of its own with every copy made of it: removing that
 * directory after the run removes them all.
 */
export async function saveConsumerSnapshot(logger: RecordingLogger): Promise<string> {
  const dir = join(mkdtempSync(join(tmpdir(), 'k3s-vm-consumer-snapshot-')), 'template');
  cpSync(seededStateDir('consumer-keys'), dir, { recursive: true });
  const cluster = await startCluster({ projectRoot: consumerVitestProject, env: snapshotConsumerEnv(dir), logger });
  await cluster.stop();
  if (!existsSync(join(dir, files.snapshotRecord)))
    throw new Error(`the consumers' template in ${dir} has no snapshot; its log:\n  ${logger.lines.join('\n  ')}`);
  return dir;
}

/** Files of a stopped state directory that a copy needs to restore its snapshot (not its logs, leases or sockets). */
const kept = new Set<string>([
  files.disk,
  files.snapshotRecord,
  files.diskRecord,
  files.buildStamp,
  files.buildLink,
  files.gitignore,
  'ssh',
]);

/** A new state directory holding a copy of the consumers' template: its first consumer run restores the snapshot. */
export function consumerSnapshotDir(label: string): string {
  const template = inject('consumerSnapshot');
  if (!template) throw new Error('no consumer snapshot: vitest.config.ts must list test/support/shared-guest-setup.ts in globalSetup');
  const dir = mkdtempSync(join(dirname(template), `${label}-`));
  for (const name of readdirSync(template))
    if (kept.has(name))
      cpSync(join(template, name), join(dir, name), { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
  return dir;
}
