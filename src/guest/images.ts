// Image archives into K3s's containerd: streamed over SSH (`k3s ctr -n k8s.io images import -`), skipped by digest.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Transform } from 'node:stream';
import { K3sVmError, throwIfAborted } from '../errors.js';
import type { ImageArchive } from './image-archive.js';
import { shellQuote } from './shell.js';
import type { GuestShell } from './ssh.js';

/**
 * One marker per imported archive, named by the archive's sha256, on the persistent disk:
 * a kept VM (and the next boot of its disk) re-imports only archives it has not seen.
 * Deleting the disk (reset) deletes them together with the images.
 */
export const guestImageMarkerDir = '/var/lib/k3s-vm/images';

/** What the marker holds: enough for `images ls` to say where an image came from. */
export interface ImageMarker {
  readonly digest: string;
  readonly file: string;
  readonly bytes: number;
  readonly names: readonly string[];
  readonly importedAt: string;
}

/** The digests of the markers in a guest folder (one `ls`, one round trip). */
export async function guestMarkers(shell: GuestShell, folder: string, signal?: AbortSignal): Promise<Set<string>> {
  const result = await shell.exec(`ls -1 ${shellQuote(folder)} 2>/dev/null || true`, { signal });
  return new Set(result.stdout.split('\n').filter((name) => /^[0-9a-f]{64}$/.test(name)));
}

/**
 * The guest command that writes one marker: the shell's own printf (no process started), the
 * small content in one write. A marker cut short still says what it has to: the work is done.
 */
export function markerPrintf(folder: string, digest: string, content: unknown): string {
  return `printf '%s\\n' ${shellQuote(JSON.stringify(content))} > ${shellQuote(`${folder}/${digest}`)}`;
}

/** The guest command that makes the marker folder and writes one marker. */
export function writeMarkerCommand(folder: string, digest: string, content: unknown): string {
  return `mkdir -p ${shellQuote(folder)} && ${markerPrintf(folder, digest, content)}`;
}

/** The guest command that imports an archive read from standard input, gunzipping it first when it is compressed. */
export function importCommand(archive: Pick<ImageArchive, 'compression'>): string {
  const ctr = 'k3s ctr -n k8s.io images import -';
  // pipefail: a damaged gzip stream fails the import even if ctr accepted what came through.
  return archive.compression === 'gzip' ? `set -o pipefail 2>/dev/null; gzip -dc | ${ctr}` : ctr;
}

export interface ImportResult {
  /** False when the guest already had the archive (by digest). */
  readonly imported: boolean;
  readonly durationMs: number;
  /** What `ctr` printed. */
  readonly output: string;
}

/**
 * Streams the archive to the guest's containerd, re-hashing it on the way (the marker is
 * written only if the bytes sent are the bytes inspected), then writes the marker.
 */
export async function importImageArchive(shell: GuestShell, archive: ImageArchive, signal?: AbortSignal): Promise<ImportResult> {
  throwIfAborted(signal);
  const started = Date.now();
  const hash = createHash('sha256');
  let readError: Error | undefined;
  const source = createReadStream(archive.path, { highWaterMark: 256 * 1024 });
  source.on('error', (error) => (readError = error));
  const hashing = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      callback(null, chunk);
    },
  });
  source.pipe(hashing);
  source.on('error', (error) => hashing.destroy(error));
  const result = await shell.exec(importCommand(archive), { stdin: hashing, signal });
  const output = `${result.stdout}${result.stderr}`.trim();
  if (readError) {
    throw new K3sVmError(
      'IMAGE_IMPORT_FAILED',
      `image archive ${archive.path} could not be read while importing it: ${readError.message}`,
      { cause: readError },
    );
  }
  if (result.exitCode !== 0) {
    throw new K3sVmError(
      'IMAGE_IMPORT_FAILED',
      `importing image archive ${archive.path} into the cluster failed (exit code ${result.exitCode ?? 'none'})`,
      {
        details: output.split('\n').slice(-15).join('\n'),
        hint: 'check that the file is an image archive for this platform (linux/amd64); the cluster itself is unchanged and usable',
      },
    );
  }
  if (hash.digest('hex') !== archive.digest) {
    throw new K3sVmError('IMAGE_IMPORT_FAILED', `image archive ${archive.path} changed while it was imported`, {
      hint: 'import it again once it is written completely',
    });
  }
  // Short: the marker is written by a command line, whose length the SSH server limits.
  const marker: ImageMarker = {
    digest: archive.digest,
    file: archive.path.slice(-512),
    bytes: archive.bytes,
    names: archive.names.slice(0, 16),
    importedAt: new Date().toISOString(),
  };
  const written = await shell.exec(writeMarkerCommand(guestImageMarkerDir, archive.digest, marker), { signal });
  if (written.exitCode !== 0) {
    throw new K3sVmError(
      'IMAGE_IMPORT_FAILED',
      `image archive ${archive.path} was imported, but its marker could not be written: ${written.stderr.trim()}`,
      {
        hint: 'the image is usable; it will be imported again next time',
      },
    );
  }
  return { imported: true, durationMs: Date.now() - started, output };
}

/** The images in the guest's containerd (`k8s.io` namespace) by name; digest-only entries left out. */
export async function listGuestImages(shell: GuestShell, signal?: AbortSignal): Promise<string[]> {
  const result = await shell.exec('k3s ctr -n k8s.io images ls -q', { signal });
  if (result.exitCode !== 0) {
    throw new K3sVmError(
      'IMAGE_IMPORT_FAILED',
      `listing the cluster's images failed (exit code ${result.exitCode ?? 'none'}): ${result.stderr.trim()}`,
    );
  }
  return result.stdout
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('sha256:'))
    .sort();
}
