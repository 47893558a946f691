// Benchmark of rewinds on the test guest: rewind-to-ready of the running VM against a cold boot-to-ready
// in the same run (targets: ≤ 10 % of the cold boot, p95 under 2 s); QEMU's two ways of loading a snapshot
// into the running VM (HMP loadvm, QMP snapshot-load) side by side; and a start that restores a snapshot
// holding a 50 MB image and 20 manifests against the cold boot that loads them.
// bench/run.ts calls benchRewind(); `node bench/rewind.ts` runs it alone (after npm run build).
import './typescript-imports.ts';
import { median, p95 } from '../test/support/stats.ts';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { StartedCluster } from '../dist/index.js';

export interface RewindBench {
  /** Median ms from launching QEMU to ready, booting (build and save excluded). */
  readonly coldMs: number;
  /** Each rewind's ms from the call to ready again (the clock correction and readiness steps included). */
  readonly rewindMs: readonly number[];
  readonly rewindMedianMs: number;
  readonly rewindP95Ms: number;
  /** rewindMedianMs / coldMs (target ≤ 0.10). */
  readonly ratio: number;
  /** Medians of the rewind's parts: QEMU's load, the clock, the readiness steps. */
  readonly parts: { readonly loadMs: number; readonly clockMs: number; readonly readyMs: number };
  /** QEMU's load alone, each way, alternating on the same VM (ms, medians). */
  readonly loadvmMs: number;
  readonly snapshotLoadMs: number;
  /** startCluster to return, with a 50 MB image and 20 manifests: cold boot that loads them, and a restore that holds them. */
  readonly workloadColdMs: number;
  readonly workloadRestoreMs: number;
}

const toReady = (cluster: StartedCluster) =>
  (cluster.timings.launchMs ?? 0) + (cluster.timings.clockMs ?? 0) + (cluster.timings.readyMs ?? 0);

type Qmp = { execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T>; close(): void };

/** QMP snapshot-load (QEMU ≥ 6.0): a job that loads `tag` into the running VM; resolves when it has concluded. */
async function snapshotLoadJob(qmp: Qmp, tag: string, diskFile: string): Promise<void> {
  const blocks = await qmp.execute<Array<{ inserted?: { file: string; 'node-name': string } }>>('query-block');
  const node = blocks.find((block) => block.inserted?.file === diskFile)?.inserted?.['node-name'];
  if (!node) throw new Error(`no block node for ${diskFile}`);
  const id = `load-${Date.now()}`;
  await qmp.execute('snapshot-load', { 'job-id': id, tag, vmstate: node, devices: [node] });
  for (;;) {
    const jobs = await qmp.execute<Array<{ id: string; status: string; error?: string }>>('query-jobs');
    const job = jobs.find((entry) => entry.id === id);
    if (job?.status === 'concluded') {
      await qmp.execute('job-dismiss', { id });
      if (job.error) throw new Error(job.error);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Boots its own test guests (snapshots on), measures, and stops them. */
export async function benchRewind(options: { rewinds?: number; loads?: number; log?: (line: string) => void } = {}): Promise<RewindBench> {
  const rewinds = options.rewinds ?? 10;
  const loads = options.loads ?? 4;
  const log = options.log ?? ((line: string) => process.stderr.write(`bench rewind: ${line}\n`));
  const { startCluster, deleteClusterSnapshot, stopCluster } = await import('../dist/index.js');
  const { QmpClient } = await import('../dist/qemu/qmp.js');
  const { loadInternalSnapshot, snapshotTag } = await import('../dist/qemu/snapshot.js');
  const { testGuestOptions } = await import('../test/support/test-guest.js');
  const { writeImageArchive } = await import('../test/support/image-archive.js');
  const { CoreV1Api } = await import('@kubernetes/client-node');

  const base = testGuestOptions('bench-rewind', { memoryMiB: 1024, snapshot: true });
  const work = mkdtempSync(join(tmpdir(), 'k3s-vm-bench-rewind-'));
  const colds: number[] = [];
  const rewindMs: number[] = [];
  const parts = { loadMs: [] as number[], clockMs: [] as number[], readyMs: [] as number[] };
  const loadvm: number[] = [];
  const snapshotLoad: number[] = [];
  let workloadColdMs: number;
  let workloadRestoreMs: number;
  const workloadOptions = testGuestOptions('bench-rewind-wl', { memoryMiB: 1024, snapshot: true });
  try {
    // Two cold boots (the first in a new directory builds and makes the disk: not counted).
    for (let i = 0; i < 3; i++) {
      await deleteClusterSnapshot(base);
      const cold = await startCluster(base);
      if (i > 0) colds.push(toReady(cold));
      log(`cold boot ${i}: ${toReady(cold)} ms${i === 0 ? ' (first in the directory: not counted)' : ''}`);
      if (i < 2) await cold.stop();
      else {
        // Rewinds of the running VM, each after something was created.
        const core = cold.kubeConfig().makeApiClient(CoreV1Api);
        for (let r = 0; r < rewinds; r++) {
          await core.createNamespace({ body: { metadata: { name: `bench-${r}` } } });
          const started = performance.now();
          const result = await cold.rewind();
          rewindMs.push(Math.round(performance.now() - started));
          parts.loadMs.push(result.loadMs);
          parts.clockMs.push(result.clockMs);
          parts.readyMs.push(result.readyMs);
          log(`rewind ${r + 1}: ${rewindMs.at(-1)} ms (load ${result.loadMs}, clock ${result.clockMs}, readiness ${result.readyMs})`);
        }
        // QEMU's load alone, both ways, alternating; a full rewind after them leaves the VM consistent.
        const { qmpSocket } = JSON.parse(readFileSync(join(base.dir, 'runtime.json'), 'utf8')) as { qmpSocket: string };
        for (let l = 0; l < loads; l++) {
          let started = performance.now();
          await loadInternalSnapshot(qmpSocket, snapshotTag);
          loadvm.push(Math.round(performance.now() - started));
          const qmp = await QmpClient.connect(qmpSocket);
          try {
            started = performance.now();
            await snapshotLoadJob(qmp, snapshotTag, join(base.dir, 'disk.qcow2'));
            snapshotLoad.push(Math.round(performance.now() - started));
          } finally {
            qmp.close();
          }
          log(`load ${l + 1}: HMP loadvm ${loadvm.at(-1)} ms, QMP snapshot-load ${snapshotLoad.at(-1)} ms`);
        }
        await cold.rewind();
        await cold.stop();
      }
    }

    // A workload of a 50 MB image and 20 manifest files: the cold boot that loads and saves it, then a restore.
    const archive = writeImageArchive(join(work, 'big.tar'), { name: 'k3s-vm.test/big:1', paddingBytes: 50 * 1024 * 1024 });
    const manifests = join(work, 'manifests');
    mkdirSync(manifests);
    for (let i = 0; i < 20; i++) {
      writeFileSync(
        join(manifests, `${String(i).padStart(2, '0')}.yaml`),
        `apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bench-${i}, namespace: default}\ndata: {n: "${i}"}\n`,
      );
    }
    const withWorkload = { ...workloadOptions, images: [archive], manifests: [manifests] };
    // The first start builds (shared with the one above) and makes the disk: cold-boot again for the figure.
    await (await startCluster(withWorkload)).stop();
    await deleteClusterSnapshot(workloadOptions);
    let started = performance.now();
    const cold = await startCluster(withWorkload);
    workloadColdMs = Math.round(performance.now() - started);
    if (cold.timings.restored) throw new Error('the cold boot with the workload restored a snapshot');
    await cold.stop();
    started = performance.now();
    const restored = await startCluster(withWorkload);
    workloadRestoreMs = Math.round(performance.now() - started);
    if (!restored.timings.restored) throw new Error('the start after the workload snapshot did not restore it');
    await restored.stop();
    log(`workload: cold boot that loads it ${workloadColdMs} ms, restore that holds it ${workloadRestoreMs} ms`);
  } finally {
    await stopCluster({ dir: base.dir, env: {}, force: true }).catch(() => undefined);
    await stopCluster({ dir: workloadOptions.dir, env: {}, force: true }).catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
  }
  const coldMs = median(colds);
  const rewindMedianMs = median(rewindMs);
  return {
    coldMs,
    rewindMs,
    rewindMedianMs,
    rewindP95Ms: p95(rewindMs),
    ratio: rewindMedianMs / coldMs,
    parts: { loadMs: median(parts.loadMs), clockMs: median(parts.clockMs), readyMs: median(parts.readyMs) },
    loadvmMs: median(loadvm),
    snapshotLoadMs: median(snapshotLoad),
    workloadColdMs,
    workloadRestoreMs,
  };
}

/** The rows bench/run.ts prints: [what, measured, target]. */
export function rewindRows(result: RewindBench): string[][] {
  return [
    ['cold boot-to-ready (median)', `${result.coldMs} ms`, ''],
    [`rewind-to-ready (median of ${result.rewindMs.length})`, `${result.rewindMedianMs} ms`, ''],
    ['rewind-to-ready p95', `${result.rewindP95Ms} ms`, '< 2000 ms'],
    ['rewind / cold boot', `${(result.ratio * 100).toFixed(0)} %`, '≤ 10 %'],
    [
      'rewind: load / readiness (clock set in its first step)',
      `${result.parts.loadMs} / ${result.parts.readyMs} ms (clock ${result.parts.clockMs} ms)`,
      '',
    ],
    ['QEMU load alone: HMP loadvm / QMP snapshot-load', `${result.loadvmMs} / ${result.snapshotLoadMs} ms`, ''],
    ['50 MB image + 20 manifests: cold boot that loads them', `${result.workloadColdMs} ms`, ''],
    ['50 MB image + 20 manifests: restore that holds them', `${result.workloadRestoreMs} ms`, ''],
  ];
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const result = await benchRewind();
  for (const [what, measured, target] of rewindRows(result))
    process.stdout.write(`${what}: ${measured}${target ? ` (target ${target})` : ''}\n`);
}
