// Benchmark of snapshots on the test guest: restore-to-ready against cold boot-to-ready, side by
// side in one state directory (pairs: snapshot deleted → cold boot, which saves → restore), the
// save's pause and the snapshot's size. Target: a restore within 25 % of a cold boot.
// bench/run.ts calls benchSnapshot(); `node bench/snapshot.ts` runs it alone (after npm run build).
import './typescript-imports.ts';
import { median } from '../test/support/stats.ts';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { StartedCluster } from '../dist/index.js';

export interface SnapshotBench {
  /** Median ms from launching QEMU to ready, booting (build and save excluded). */
  readonly coldMs: number;
  /** Median ms from launching QEMU with -loadvm to ready, the clock correction included. */
  readonly restoreMs: number;
  /** restoreMs / coldMs (target ≤ 0.25). */
  readonly ratio: number;
  /** Median ms the save paused the VM (savevm). */
  readonly saveMs: number;
  /** The VM state in the disk image. */
  readonly vmStateBytes: number;
  /** What the disk image occupies with the snapshot in it. */
  readonly diskBytes: number;
  readonly samples: ReadonlyArray<{ readonly coldMs: number; readonly restoreMs: number; readonly clockMs: number }>;
}

const toReady = (cluster: StartedCluster) =>
  (cluster.timings.launchMs ?? 0) + (cluster.timings.clockMs ?? 0) + (cluster.timings.readyMs ?? 0);

/** Boots its own test guest (snapshots on), measures pairs of cold boot and restore, and stops it. */
export async function benchSnapshot(
  options: { samples?: number; guest?: 'test' | 'real'; log?: (line: string) => void } = {},
): Promise<SnapshotBench> {
  const samples = options.samples ?? 3;
  const log = options.log ?? ((line: string) => process.stderr.write(`bench snapshot: ${line}\n`));
  const { startCluster, deleteClusterSnapshot, stopCluster } = await import('../dist/index.js');
  const { testGuestOptions } = await import('../test/support/test-guest.js');
  const { realGuestOptions } = await import('../test/support/real-guest.js');
  const options_ =
    options.guest === 'real'
      ? realGuestOptions('bench-snapshot', { snapshot: true })
      : testGuestOptions('bench-snapshot', { memoryMiB: 1024, snapshot: true });
  const pairs: Array<{ coldMs: number; restoreMs: number; clockMs: number }> = [];
  const saves: number[] = [];
  let vmStateBytes = 0;
  let diskBytes = 0;
  try {
    for (let i = 0; i < samples; i++) {
      await deleteClusterSnapshot(options_);
      const cold = await startCluster(options_);
      if (cold.timings.restored) throw new Error('a start without a snapshot restored one');
      const record = JSON.parse(readFileSync(join(options_.dir, 'snapshot.json'), 'utf8')) as {
        saveMs: number;
        disk: { vmStateBytes: number };
      };
      saves.push(record.saveMs);
      vmStateBytes = record.disk.vmStateBytes;
      diskBytes = statSync(join(options_.dir, 'disk.qcow2')).blocks * 512;
      await cold.stop();
      const restored = await startCluster(options_);
      if (!restored.timings.restored) throw new Error('the start after a save did not restore it');
      pairs.push({ coldMs: toReady(cold), restoreMs: toReady(restored), clockMs: restored.timings.clockMs ?? 0 });
      await restored.stop();
      log(
        `pair ${i + 1}: cold boot ${pairs.at(-1)!.coldMs} ms, restore ${pairs.at(-1)!.restoreMs} ms (clock ${pairs.at(-1)!.clockMs} ms), save ${record.saveMs} ms`,
      );
    }
  } finally {
    await stopCluster({ dir: options_.dir, env: {}, force: true }).catch(() => undefined);
  }
  const coldMs = median(pairs.map((pair) => pair.coldMs));
  const restoreMs = median(pairs.map((pair) => pair.restoreMs));
  return { coldMs, restoreMs, ratio: restoreMs / coldMs, saveMs: median(saves), vmStateBytes, diskBytes, samples: pairs };
}

/** The rows bench/run.ts prints: [what, measured, target]. */
export function snapshotRows(result: SnapshotBench): string[][] {
  const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(0)} MiB`;
  return [
    ['cold boot-to-ready (median)', `${result.coldMs} ms`, ''],
    ['restore-to-ready (median)', `${result.restoreMs} ms`, ''],
    ['restore / cold boot', `${(result.ratio * 100).toFixed(0)} %`, '≤ 25 %'],
    ['save (VM paused)', `${result.saveMs} ms`, ''],
    ['snapshot size (VM state in the disk)', mib(result.vmStateBytes), ''],
    ['disk image with the snapshot', mib(result.diskBytes), ''],
  ];
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const result = await benchSnapshot();
  for (const [what, measured, target] of snapshotRows(result))
    process.stdout.write(`${what}: ${measured}${target ? ` (target ${target})` : ''}\n`);
}
