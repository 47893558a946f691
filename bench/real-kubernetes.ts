// Benchmark of the real-Kubernetes test guest (fixtures/test-guest/real-kubernetes.nix) under
// emulation: boot to ready with each readiness step's time; create-to-Running of a pod of an
// imported image; a 50 MB image import beside a raw SSH stream of the same bytes (the workload
// benchmark on this guest); restore-to-ready beside a cold boot (the snapshot benchmark on it).
// bench/run.ts calls it with K3S_VM_BENCH_REAL=1; `node bench/real-kubernetes.ts` runs it alone
// (after npm run build and scripts/build-kubernetes.sh).
import './typescript-imports.ts';
import { median } from '../test/support/stats.ts';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// Imported once the hook above is in place (static imports are all resolved before it runs), so
// that `node bench/real-kubernetes.ts` works alone too.
const { benchSnapshot, snapshotRows } = await import('./snapshot.js');
const { benchWorkload, workloadRows } = await import('./workload.js');

export interface RealBench {
  /** Launch to ready of a cold boot, and each readiness step. */
  readonly bootMs: number;
  readonly steps: ReadonlyArray<{ name: string; ms: number }>;
  /** Pod created to Running, its image imported before. */
  readonly podRunningMs: number;
  /** Each rewind of the running guest to its ready-state snapshot, from the call to ready again. */
  readonly rewindMs: readonly number[];
  readonly workload: Awaited<ReturnType<typeof benchWorkload>>;
  readonly snapshot: Awaited<ReturnType<typeof benchSnapshot>>;
}

export async function benchReal(options: { log?: (line: string) => void } = {}): Promise<RealBench> {
  const log = options.log ?? ((line: string) => process.stderr.write(`bench real: ${line}\n`));
  const { startCluster, importImages, loadKubeConfig } = await import('../dist/index.js');
  const { CoreV1Api } = await import('@kubernetes/client-node');
  const { realGuestOptions, realGuestUnavailable } = await import('../test/support/real-guest.js');
  const { writeImageArchive } = await import('../test/support/image-archive.js');
  const unavailable = realGuestUnavailable();
  if (unavailable) throw new Error(`the real-Kubernetes test guest cannot run here: ${unavailable}`);

  // Snapshots on: the cold boot saves the ready-state snapshot the rewinds below return to
  // (the save is not part of boot-to-ready).
  const options_ = realGuestOptions('bench-real', { snapshot: true });
  const cluster = await startCluster(options_);
  let bootMs: number;
  let steps: RealBench['steps'];
  let podRunningMs: number;
  const rewindMs: number[] = [];
  try {
    bootMs = (cluster.timings.launchMs ?? 0) + (cluster.timings.readyMs ?? 0);
    steps = cluster.timings.steps;
    log(`cold boot to ready ${(bootMs / 1000).toFixed(1)} s`);
    const archive = writeImageArchive(join(mkdtempSync(join(tmpdir(), 'bench-real-')), 'hello.tar'), {
      name: 'k3s-vm.test/hello:1',
      executables: { '/bin/busybox': readFileSync('/bin/busybox') },
      links: { '/bin/sh': 'busybox', '/bin/sleep': 'busybox' },
      cmd: ['/bin/sh'],
    });
    await importImages([archive], { dir: options_.dir });
    const core = loadKubeConfig(cluster.kubeconfig).makeApiClient(CoreV1Api);
    const started = performance.now();
    await core.createNamespacedPod({
      namespace: 'default',
      body: {
        metadata: { name: 'bench' },
        spec: { containers: [{ name: 'main', image: 'k3s-vm.test/hello:1', imagePullPolicy: 'Never', command: ['sleep', '3600'] }] },
      },
    });
    for (;;) {
      const phase = (await core.readNamespacedPod({ name: 'bench', namespace: 'default' })).status?.phase;
      if (phase === 'Running') break;
      if (performance.now() - started > 300_000) throw new Error(`the pod did not run in 300 s (phase ${phase})`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    podRunningMs = performance.now() - started;
    log(`pod created to Running ${(podRunningMs / 1000).toFixed(1)} s`);
    // Back to the ready state (the pod above gone) without a reboot, three times.
    for (let i = 0; i < 3; i++) {
      const at = performance.now();
      await cluster.rewind();
      rewindMs.push(Math.round(performance.now() - at));
      log(`rewind ${i + 1} to ready ${(rewindMs[i]! / 1000).toFixed(1)} s`);
    }
  } finally {
    await cluster.stop();
  }
  const workload = await benchWorkload({ samples: 1, guest: 'real', log });
  const snapshot = await benchSnapshot({ samples: 1, guest: 'real', log });
  return { bootMs, steps, podRunningMs, rewindMs, workload, snapshot };
}

/** The rows bench/run.ts prints: [what, measured, target]. */
export function realRows(result: RealBench): string[][] {
  const s = (value: number) => `${(value / 1000).toFixed(1)} s`;
  return [
    ['cold boot to ready', s(result.bootMs), ''],
    ...result.steps.map((step) => [`  readiness: ${step.name}`, s(step.ms), '']),
    ['pod created to Running (imported image)', s(result.podRunningMs), ''],
    [
      'rewind to ready (median of 3; share of the cold boot)',
      `${s(median(result.rewindMs))} (${((median(result.rewindMs) / result.bootMs) * 100).toFixed(0)} %)`,
      '≤ 10 % of the cold boot',
    ],
    ...workloadRows(result.workload).map(([what, measured, target]) => [what!, measured!, target!]),
    ...snapshotRows(result.snapshot).map(([what, measured, target]) => [what!, measured!, target!]),
  ];
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const result = await benchReal();
  for (const [what, measured, target] of realRows(result))
    process.stdout.write(`${what}: ${measured}${target ? ` (target ${target})` : ''}\n`);
}
