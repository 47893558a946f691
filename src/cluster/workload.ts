// Your workload: image archives into the cluster's containerd, then manifests applied; each only when new or changed.
import { isAbsolute, relative, resolve } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import { existingClusterTimeoutSeconds, timeoutMsFor } from '../config/defaults.js';
import type { ResolvedConfig } from '../config/options.js';
import { K3sVmError, throwIfAborted } from '../errors.js';
import { inspectImageArchive, type ImageArchive } from '../guest/image-archive.js';
import { guestImageMarkerDir, guestMarkers, importImageArchive, listGuestImages, markerPrintf } from '../guest/images.js';
import { loadKubeConfig } from '../kube/kubeconfig.js';
import { applyManifestFile, expandManifestPaths, guestManifestMarkerDir, readManifestFile, type ManifestFile } from '../kube/manifests.js';
import { shellQuote } from '../guest/shell.js';
import { GuestSsh, type GuestShell } from '../guest/ssh.js';
import { silentLogger, type Logger } from '../log.js';
import { files } from '../state/files.js';
import { InstanceDir } from '../state/instance-dir.js';
import { selectContext } from './existing.js';
import type { Cluster, ClusterOptions, StartedCluster } from './options.js';
import { configOf } from './prepare.js';
import { runningCluster } from './status.js';

export interface WorkloadOptions {
  /** Image archives to import (absolute, or relative to the project root). */
  readonly images?: readonly string[];
  /** Manifest files and directories to apply, in order. */
  readonly manifests?: readonly string[];
  /** Wait for the manifests' Deployments to roll out. @default false */
  readonly waitForRollout?: boolean;
  /** Import and apply even what the VM has had before. @default false */
  readonly force?: boolean;
  readonly logger?: Logger;
  readonly signal?: AbortSignal;
}

export interface ImageOutcome {
  readonly path: string;
  readonly bytes: number;
  readonly digest: string;
  readonly names: readonly string[];
  /** False when the VM had it already. */
  readonly imported: boolean;
  readonly durationMs: number;
}

export interface ManifestOutcome {
  readonly path: string;
  readonly bytes: number;
  readonly digest: string;
  readonly objects: readonly string[];
  /** False when the VM had this content applied already. */
  readonly applied: boolean;
  readonly durationMs: number;
}

export interface WorkloadResult {
  readonly images: readonly ImageOutcome[];
  readonly manifests: readonly ManifestOutcome[];
  readonly durationMs: number;
}

/** Where the workload goes: the API, and for a VM its shell (for images and the markers). */
interface WorkloadTarget {
  readonly kubeConfig: KubeConfig;
  /** Absent for an existing cluster: no images, no markers (every file is applied). */
  readonly shell: GuestShell | undefined;
  readonly config: ResolvedConfig;
  /** Deadline for CRDs and rollouts, from now. */
  readonly waitMs: number;
}

/**
 * Shell commands joined with && into command lines of at most maxBytes each (each line begins
 * with `first`, if given): an SSH server limits the length of a command (dropbear: 9000 bytes).
 */
export function commandBatches(commands: readonly string[], maxBytes = 6000, first?: string): string[] {
  const batches: string[] = [];
  let current = first ?? '';
  for (const command of commands) {
    if (current && current !== first && current.length + 4 + command.length > maxBytes) {
      batches.push(current);
      current = first ?? '';
    }
    current = current ? `${current} && ${command}` : command;
  }
  if (current && current !== first) batches.push(current);
  return batches;
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['kB', 'MB', 'GB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;

/**
 * Checks the workload's files before anything is booted or touched: every archive exists and
 * is an image archive (hashed, so the import needs no second look), every manifest parses.
 */
export async function checkWorkload(
  config: Pick<ResolvedConfig, 'images' | 'manifests'> & { readonly names?: Pick<ResolvedConfig['names'], 'images' | 'manifests'> },
  signal?: AbortSignal,
): Promise<{ archives: ImageArchive[]; manifests: ManifestFile[] }> {
  const archives: ImageArchive[] = [];
  for (const path of config.images) archives.push(await inspectImageArchive(path, signal, config.names?.images));
  const manifests: ManifestFile[] = [];
  for (const path of await expandManifestPaths(config.manifests, config.names?.manifests)) manifests.push(await readManifestFile(path));
  return { archives, manifests };
}

async function loadWorkloadInto(
  target: WorkloadTarget,
  options: WorkloadOptions & { images: readonly string[]; manifests: readonly string[] },
): Promise<WorkloadResult> {
  const started = Date.now();
  const logger = options.logger ?? silentLogger;
  const shown = (path: string) => {
    const rel = relative(target.config.projectRoot, path);
    return rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : path;
  };
  // Everything is read and checked before the cluster is touched: a bad file changes nothing.
  const { archives, manifests } = await checkWorkload(options, options.signal);
  if (archives.length > 0 && !target.shell) {
    throw new K3sVmError(
      'CONFIG_INVALID',
      `images can only be imported into the VM, not into an existing cluster (${target.config.names.kubeconfig})`,
      {
        hint: `push the images to a registry the cluster pulls from, or leave ${target.config.names.kubeconfig} out to use the VM`,
      },
    );
  }
  const shell = target.shell;
  const importedBefore =
    shell && archives.length > 0 && !options.force ? await guestMarkers(shell, guestImageMarkerDir, options.signal) : new Set<string>();
  const appliedBefore =
    shell && manifests.length > 0 && !options.force ? await guestMarkers(shell, guestManifestMarkerDir, options.signal) : new Set<string>();

  const images: ImageOutcome[] = [];
  for (const archive of archives) {
    throwIfAborted(options.signal);
    const what = `image ${shown(archive.path)} (${formatBytes(archive.bytes)}${archive.names.length ? `, ${archive.names.join(' ')}` : ''})`;
    if (importedBefore.has(archive.digest)) {
      images.push({
        path: archive.path,
        bytes: archive.bytes,
        digest: archive.digest,
        names: archive.names,
        imported: false,
        durationMs: 0,
      });
      logger.progress(`${what} already imported (sha256 ${archive.digest.slice(0, 12)})`);
      continue;
    }
    logger.progress(`importing ${what}`);
    const result = await importImageArchive(shell!, archive, options.signal);
    importedBefore.add(archive.digest);
    images.push({
      path: archive.path,
      bytes: archive.bytes,
      digest: archive.digest,
      names: archive.names,
      imported: true,
      durationMs: result.durationMs,
    });
    logger.progress(`imported ${what} in ${seconds(result.durationMs)}`);
  }

  const deadline = Date.now() + target.waitMs;
  const applied: ManifestOutcome[] = [];
  // Markers of the files applied, written together (one round trip) at the end, also after a failure.
  const markers: string[] = [];
  const writeMarkers = async () => {
    if (!shell) return;
    // Never in the way of the error that ended the loop: a missing marker only means applying again.
    for (const batch of commandBatches(markers, 6000, `mkdir -p ${shellQuote(guestManifestMarkerDir)}`)) {
      const written = await shell
        .exec(batch, { signal: options.signal })
        .catch((error: unknown) => ({ exitCode: -1, stderr: (error as Error).message }));
      if (written.exitCode !== 0) {
        logger.warn(`could not record which manifests were applied (${written.stderr.trim()}); they will be applied again next time`);
      }
    }
  };
  try {
    for (const file of manifests) {
      throwIfAborted(options.signal);
      const count = `${file.documents.length} object${file.documents.length === 1 ? '' : 's'}`;
      if (appliedBefore.has(file.digest)) {
        applied.push({ path: file.path, bytes: file.bytes, digest: file.digest, objects: [], applied: false, durationMs: 0 });
        logger.progress(`manifest ${shown(file.path)} (${count}, ${formatBytes(file.bytes)}) unchanged since it was applied`);
        continue;
      }
      let result;
      try {
        result = await applyManifestFile(target.kubeConfig, file, {
          waitForRollout: options.waitForRollout ?? false,
          deadline,
          signal: options.signal,
        });
      } catch (error) {
        if (error instanceof K3sVmError && applied.some((m) => m.applied)) {
          const earlier = applied.filter((m) => m.applied).map((m) => shown(m.path));
          const details = [error.details, `files applied before it: ${earlier.join(', ')}`].filter(Boolean).join('\n');
          throw new K3sVmError(error.code, error.message, { cause: error.cause, hint: error.hint, details });
        }
        throw error;
      }
      markers.push(
        markerPrintf(guestManifestMarkerDir, file.digest, {
          digest: file.digest,
          file: file.path.slice(-512),
          objects: result.objects.length,
          appliedAt: new Date().toISOString(),
        }),
      );
      appliedBefore.add(file.digest);
      applied.push({
        path: file.path,
        bytes: file.bytes,
        digest: file.digest,
        objects: result.objects,
        applied: true,
        durationMs: result.durationMs,
      });
      logger.progress(`applied manifest ${shown(file.path)} (${count}, ${formatBytes(file.bytes)}) in ${seconds(result.durationMs)}`);
    }
  } finally {
    await writeMarkers();
  }
  return { images, manifests: applied, durationMs: Date.now() - started };
}

const resolvePaths = (config: ResolvedConfig, paths: readonly string[] | undefined) =>
  (paths ?? []).map((path) => resolve(config.projectRoot, path));

/** The wait for CRDs and rollouts: the boot deadline of the accelerator in use, or the existing cluster's. */
function waitMsOf(cluster: Pick<Cluster, 'kind' | 'config'> & { accel?: 'kvm' | 'tcg' }): number {
  if (cluster.kind === 'existing') return (cluster.config.timeoutSeconds ?? existingClusterTimeoutSeconds) * 1000;
  return timeoutMsFor(cluster.config.timeoutSeconds, cluster.accel ?? 'kvm');
}

/**
 * Imports images and applies manifests into a cluster a run holds (a started VM or an
 * existing cluster). The start does this with the images and manifests options; tests can
 * call it for more.
 */
export async function loadWorkload(cluster: Cluster, options: WorkloadOptions = {}): Promise<WorkloadResult> {
  const config = cluster.config;
  const plan = { ...options, images: resolvePaths(config, options.images), manifests: resolvePaths(config, options.manifests) };
  if (plan.images.length === 0 && plan.manifests.length === 0) return { images: [], manifests: [], durationMs: 0 };
  const vm = cluster.kind === 'vm' ? (cluster as StartedCluster) : undefined;
  const shell = vm ? clusterShell(vm) : undefined;
  try {
    return await loadWorkloadInto(
      { kubeConfig: cluster.kubeConfig(), shell, config, waitMs: waitMsOf({ kind: cluster.kind, config, accel: vm?.accel }) },
      plan,
    );
  } finally {
    shell?.close();
  }
}

/**
 * The VM's shell for the workload: short commands (markers) on the handle's shared
 * connection, so that a workload with nothing new costs one round trip and no handshake;
 * a connection of its own, opened on first use, for each archive streamed in.
 */
function clusterShell(vm: StartedCluster): GuestShell & { close(): void } {
  let own: Promise<GuestSsh> | undefined;
  const shell: GuestShell & { close(): void } = {
    async exec(command, options = {}) {
      if (options.stdin === undefined) return vm.exec(command);
      own ??= vm.ssh();
      return (await own).exec(command, options);
    },
    async readFile(path) {
      const result = await vm.exec(`cat ${shellQuote(path)}`);
      return result.exitCode === 0 ? result.stdout : undefined;
    },
    close() {
      void own?.then(
        (ssh) => ssh.close(),
        () => undefined,
      );
    },
  };
  return shell;
}

/**
 * The workload of the options (images, manifests, waitForRollout) into a cluster that was just
 * started or attached to. On failure this run's hold on the cluster is released (a kept VM
 * stays up, usable) and the original error is thrown.
 */
export async function withConfiguredWorkload<C extends Cluster>(cluster: C, logger: Logger, signal?: AbortSignal): Promise<C> {
  const { images, manifests, waitForRollout } = cluster.config;
  if (images.length === 0 && manifests.length === 0) return cluster;
  try {
    await loadWorkload(cluster, { images, manifests, waitForRollout, logger, ...(signal ? { signal } : {}) });
  } catch (error) {
    await cluster
      .stop()
      .catch((stopError: unknown) => logger.warn(`releasing the cluster after the failed workload: ${(stopError as Error).message}`));
    throw error;
  }
  return cluster;
}

/** The running VM's SSH shell and API, without holding the VM (the CLI's commands). */
async function runningVmTarget(
  options: ClusterOptions,
): Promise<{ shell: GuestSsh; kubeConfig: KubeConfig; config: ResolvedConfig; accel: 'kvm' | 'tcg' }> {
  const status = await runningCluster(options);
  const dir = new InstanceDir(status.config.dir, status.config.names.dir);
  const privateKey = await dir.readText(files.sshKey);
  const kubeconfig = await dir.readText(files.kubeconfig);
  if (!privateKey || !kubeconfig) {
    throw new K3sVmError('NOT_READY', `the running VM has no ${privateKey ? 'kubeconfig' : 'instance key'} in ${status.config.dir} yet`, {
      hint: 'wait for the start to finish, or run k3s-vm start (attaches without rebooting)',
    });
  }
  const shell = await GuestSsh.connect({ port: status.runtime.sshPort, privateKey }, 10_000, options.signal);
  return { shell, kubeConfig: loadKubeConfig(kubeconfig), config: status.config, accel: status.runtime.accel };
}

/**
 * Imports image archives into the running VM (`k3s-vm images import`); archives it has had
 * before are skipped unless `force`.
 */
export async function importImages(paths: readonly string[], options: ClusterOptions & { force?: boolean } = {}): Promise<WorkloadResult> {
  const target = await runningVmTarget(options);
  try {
    const images = resolvePaths(target.config, paths);
    return await loadWorkloadInto(
      {
        kubeConfig: target.kubeConfig,
        shell: target.shell,
        config: target.config,
        waitMs: timeoutMsFor(target.config.timeoutSeconds, target.accel),
      },
      {
        images,
        manifests: [],
        force: options.force ?? false,
        logger: options.logger ?? silentLogger,
        ...(options.signal ? { signal: options.signal } : {}),
      },
    );
  } finally {
    target.shell.close();
  }
}

/** The names of the images in the running VM's containerd (`k3s-vm images ls`). */
export async function listImages(options: ClusterOptions = {}): Promise<string[]> {
  const target = await runningVmTarget(options);
  try {
    return await listGuestImages(target.shell, options.signal);
  } finally {
    target.shell.close();
  }
}

/**
 * Applies manifests (`k3s-vm apply`) to the running VM, skipping files it has had unchanged
 * unless `force`, or to the existing cluster of K3S_VM_KUBECONFIG, where every file is applied.
 */
export async function applyManifests(
  paths: readonly string[],
  options: ClusterOptions & { force?: boolean; waitForRollout?: boolean } = {},
): Promise<WorkloadResult> {
  const config = configOf(options);
  const common = {
    images: [],
    manifests: resolvePaths(config, paths),
    waitForRollout: options.waitForRollout ?? config.waitForRollout,
    force: options.force ?? false,
    logger: options.logger ?? silentLogger,
    ...(options.signal ? { signal: options.signal } : {}),
  };
  if (config.kubeconfig) {
    const selected = selectContext(config);
    return loadWorkloadInto(
      {
        kubeConfig: selected.kubeConfig,
        shell: undefined,
        config,
        waitMs: (config.timeoutSeconds ?? existingClusterTimeoutSeconds) * 1000,
      },
      common,
    );
  }
  const target = await runningVmTarget(options);
  try {
    return await loadWorkloadInto(
      {
        kubeConfig: target.kubeConfig,
        shell: target.shell,
        config: target.config,
        waitMs: timeoutMsFor(target.config.timeoutSeconds, target.accel),
      },
      common,
    );
  } finally {
    target.shell.close();
  }
}
