// Benchmark of your workload on the test guest: importing a 50 MB image archive against streaming
// the same bytes over the same SSH connection to /dev/null (target ≤ 1.5×); a second import of the
// same archive, skipped by its digest (target ≤ 100 ms); applying 20 manifests against creating
// the same objects one by one. bench/run.ts calls benchWorkload(); `node bench/workload.ts` runs it alone.
import './typescript-imports.ts';
import { median } from '../test/support/stats.ts';
import { createHash } from 'node:crypto';
import { createReadStream, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { StartedCluster } from '../dist/index.js';

export interface WorkloadBench {
  readonly archiveBytes: number;
  /** Median ms of streaming the archive's bytes to `cat > /dev/null` in the guest. */
  readonly streamMs: number;
  /** Median ms of importing the archive (stream into ctr, marker written), the connection already open. */
  readonly importMs: number;
  /** importMs / streamMs (target ≤ 1.5). */
  readonly importRatio: number;
  /** ms to read and hash the archive once on the host (a new process's first look at it). */
  readonly hashMs: number;
  /** Median ms of a second loadWorkload of the same archive, skipped by digest (target ≤ 100). */
  readonly skipMs: number;
  /** ms to apply 20 manifest files (one ConfigMap each) by server-side apply. */
  readonly apply20Ms: number;
  /** ms to create the same 20 objects one by one with client-node. */
  readonly create20Ms: number;
  /** ms of applying the same 20 files again, each skipped as unchanged. */
  readonly reapply20Ms: number;
}

const now = () => performance.now();

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const started = now();
  await fn();
  return now() - started;
}

/** Boots its own test guest, measures, and stops it. */
export async function benchWorkload(
  options: { samples?: number; archiveMiB?: number; guest?: 'test' | 'real'; log?: (line: string) => void } = {},
): Promise<WorkloadBench> {
  const samples = options.samples ?? 3;
  const log = options.log ?? ((line: string) => process.stderr.write(`bench workload: ${line}\n`));
  const { startCluster, loadWorkload } = await import('../dist/index.js');
  const { inspectImageArchive } = await import('../dist/guest/image-archive.js');
  const { importImageArchive } = await import('../dist/guest/images.js');
  const { CoreV1Api } = await import('@kubernetes/client-node');
  const { testGuestOptions } = await import('../test/support/test-guest.js');
  const { writeImageArchive } = await import('../test/support/image-archive.js');

  const work = mkdtempSync(join(tmpdir(), 'k3s-vm-bench-workload-'));
  const archive = writeImageArchive(join(work, 'big.tar'), {
    name: 'k3s-vm.test/big:1',
    paddingBytes: (options.archiveMiB ?? 50) * 1024 * 1024,
  });
  const archiveBytes = readFileSync(archive).length;
  log(`archive of ${(archiveBytes / 1024 / 1024).toFixed(1)} MiB written; booting a test guest`);
  const { realGuestOptions } = await import('../test/support/real-guest.js');
  const cluster: StartedCluster = await startCluster(
    options.guest === 'real' ? realGuestOptions('bench-workload') : testGuestOptions('bench-workload', { memoryMiB: 1024 }),
  );
  try {
    const hashMs = await timed(
      () =>
        new Promise<void>((resolve, reject) => {
          const hash = createHash('sha256');
          createReadStream(archive)
            .on('data', (chunk) => hash.update(chunk))
            .on('end', () => resolve(void hash.digest('hex')))
            .on('error', reject);
        }),
    );
    const inspected = await inspectImageArchive(archive);
    const ssh = await cluster.ssh();
    const streams: number[] = [];
    const imports: number[] = [];
    try {
      for (let i = 0; i < samples; i++) {
        streams.push(
          await timed(async () => {
            const result = await ssh.exec('cat > /dev/null', { stdin: createReadStream(archive, { highWaterMark: 256 * 1024 }) });
            if (result.exitCode !== 0) throw new Error(`cat > /dev/null failed: ${result.stderr}`);
          }),
        );
        imports.push(await timed(() => importImageArchive(ssh, inspected)));
        log(`sample ${i + 1}: stream ${Math.round(streams.at(-1)!)} ms, import ${Math.round(imports.at(-1)!)} ms`);
      }
    } finally {
      ssh.close();
    }
    const skips: number[] = [];
    for (let i = 0; i < Math.max(samples, 5); i++) {
      skips.push(
        await timed(async () => {
          const result = await loadWorkload(cluster, { images: [archive] });
          if (result.images[0]?.imported !== false) throw new Error('the second import was not skipped');
        }),
      );
    }

    const manifests = join(work, 'manifests');
    mkdirSync(manifests);
    const paths: string[] = [];
    for (let i = 0; i < 20; i++) {
      const path = join(manifests, `cm-${String(i).padStart(2, '0')}.yaml`);
      writeFileSync(path, `apiVersion: v1\nkind: ConfigMap\nmetadata: {name: applied-${i}, namespace: default}\ndata: {index: "${i}"}\n`);
      paths.push(path);
    }
    const apply20Ms = await timed(() => loadWorkload(cluster, { manifests: [manifests] }));
    const reapply20Ms = await timed(() => loadWorkload(cluster, { manifests: [manifests] }));
    const core = cluster.kubeConfig().makeApiClient(CoreV1Api);
    const create20Ms = await timed(async () => {
      for (let i = 0; i < 20; i++) {
        await core.createNamespacedConfigMap({
          namespace: 'default',
          body: { metadata: { name: `created-${i}` }, data: { index: String(i) } },
        });
      }
    });
    const streamMs = median(streams);
    const importMs = median(imports);
    return {
      archiveBytes,
      streamMs,
      importMs,
      importRatio: importMs / streamMs,
      hashMs,
      skipMs: median(skips),
      apply20Ms,
      create20Ms,
      reapply20Ms,
    };
  } finally {
    await cluster.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

/** The figures as table rows: what, measured, target. */
export function workloadRows(bench: WorkloadBench): string[][] {
  const ms = (value: number) => `${Math.round(value)} ms`;
  return [
    [`stream ${(bench.archiveBytes / 1024 / 1024).toFixed(0)} MiB over SSH to /dev/null`, ms(bench.streamMs), 'baseline'],
    ['import the same archive (ctr import, marker)', `${ms(bench.importMs)} (${bench.importRatio.toFixed(2)}×)`, '≤ 1.5×'],
    ['hash the archive on the host (first look)', ms(bench.hashMs), ''],
    ['import it again (skipped by digest)', ms(bench.skipMs), '≤ 100 ms'],
    ['apply 20 manifest files', ms(bench.apply20Ms), ''],
    ['create the same 20 objects one by one', ms(bench.create20Ms), 'baseline'],
    ['apply the 20 files again (unchanged, skipped)', ms(bench.reapply20Ms), ''],
  ];
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const result = await benchWorkload();
  const rows = workloadRows(result);
  const width = Math.max(...rows.map((row) => row[0]!.length));
  for (const row of rows) process.stdout.write(`${row[0]!.padEnd(width)}  ${row[1]!.padEnd(18)}  ${row[2]}\n`);
  if (process.argv.includes('--json')) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}
