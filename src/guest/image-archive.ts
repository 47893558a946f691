// Reads an image archive once: its sha256, its compression, its format and the image names its own index gives.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createGunzip } from 'node:zlib';
import { K3sVmError } from '../errors.js';

/** docker-archive: `docker save`, `podman save`, nixpkgs' dockerTools. oci-archive: an OCI image layout in a tar. */
export type ImageArchiveFormat = 'docker-archive' | 'oci-archive';

export interface ImageArchive {
  /** Absolute path of the archive. */
  readonly path: string;
  /** Size of the file as it is (compressed or not). */
  readonly bytes: number;
  /** sha256 of the file's bytes, hex: what the guest's marker is named after. */
  readonly digest: string;
  readonly compression: 'gzip' | 'none';
  readonly format: ImageArchiveFormat;
  /** Image references as containerd names them (`docker.io/library/app:1`). */
  readonly names: readonly string[];
}

/** Members of an image archive that say what is in it; anything else is only skipped over. */
const indexMembers = new Set(['manifest.json', 'index.json', 'oci-layout', 'repositories']);
/** An index member larger than this is not one. */
const maxIndexBytes = 4 * 1024 * 1024;

const notAnArchive = (path: string, found: string) =>
  new K3sVmError('WORKLOAD_INVALID', `${path} is not an image archive: ${found}`, {
    hint: 'give a docker-archive (docker save, podman save, nixpkgs dockerTools) or an OCI archive, as .tar or .tar.gz',
  });

/**
 * A streaming reader of tar headers (ustar, GNU long names, pax paths) that keeps the
 * content of the index members and skips over everything else without buffering it.
 */
class TarIndexReader {
  readonly members = new Map<string, Buffer>();
  #pending = Buffer.alloc(0);
  /** Bytes of the current member's data (and padding) still to come. */
  #skip = 0;
  #collect: { name: string; size: number; chunks: Buffer[] } | undefined;
  #nextName: string | undefined;
  #longName: { size: number; chunks: Buffer[]; pax: boolean } | undefined;
  headers = 0;
  ended = false;
  error: string | undefined;

  push(chunk: Buffer): void {
    if (this.ended || this.error) return;
    let data = this.#pending.length ? Buffer.concat([this.#pending, chunk]) : chunk;
    this.#pending = Buffer.alloc(0);
    while (data.length > 0 && !this.ended && !this.error) {
      if (this.#skip > 0) {
        const take = Math.min(this.#skip, data.length);
        const part = data.subarray(0, take);
        const target = this.#collect ?? this.#longName;
        if (target) {
          const wanted = target.size - target.chunks.reduce((n, c) => n + c.length, 0);
          if (wanted > 0) target.chunks.push(part.subarray(0, Math.min(wanted, part.length)));
        }
        this.#skip -= take;
        data = data.subarray(take);
        if (this.#skip === 0) this.#finishMember();
        continue;
      }
      if (data.length < 512) {
        this.#pending = Buffer.from(data);
        return;
      }
      this.#header(data.subarray(0, 512));
      data = data.subarray(512);
    }
  }

  #finishMember(): void {
    if (this.#collect) {
      this.members.set(this.#collect.name, Buffer.concat(this.#collect.chunks));
      this.#collect = undefined;
    }
    if (this.#longName) {
      const text = Buffer.concat(this.#longName.chunks).toString('utf8');
      if (this.#longName.pax) {
        const path = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(text);
        if (path) this.#nextName = path[1];
      } else this.#nextName = text.replace(/\0.*$/s, '');
      this.#longName = undefined;
    }
  }

  #header(block: Buffer): void {
    if (block.every((byte) => byte === 0)) {
      this.ended = true;
      return;
    }
    const field = (offset: number, length: number) =>
      block
        .subarray(offset, offset + length)
        .toString('latin1')
        .replace(/\0.*$/s, '');
    const stored = parseInt(field(148, 8).trim() || 'x', 8);
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : block[i]!;
    if (!Number.isFinite(stored) || stored !== sum) {
      this.error = this.headers === 0 ? 'it is not a tar archive' : `a damaged tar header after ${this.headers} members`;
      return;
    }
    this.headers++;
    // Sizes of 8 GiB and more are base-256 (GNU): a set high bit, then big-endian bytes.
    const size = block[124]! & 0x80 ? Number(block.readBigUInt64BE(128)) : parseInt(field(124, 12).trim() || '0', 8);
    const type = field(156, 1) || '0';
    const prefix = field(257, 6).startsWith('ustar') ? field(345, 155) : '';
    const name = (this.#nextName ?? (prefix ? `${prefix}/${field(0, 100)}` : field(0, 100))).replace(/^\.\//, '');
    this.#skip = Math.ceil(size / 512) * 512;
    if (type === 'L' || type === 'x') {
      this.#longName = { size, chunks: [], pax: type === 'x' };
    } else {
      this.#nextName = undefined;
      if ((type === '0' || type === '\0') && indexMembers.has(name) && size <= maxIndexBytes) this.#collect = { name, size, chunks: [] };
    }
    if (this.#skip === 0) this.#finishMember();
  }
}

/** A reference as containerd stores it: `app:1` → `docker.io/library/app:1`. */
export function normalizeImageName(reference: string): string {
  let ref = reference.trim();
  const first = ref.split('/')[0]!;
  if (!ref.includes('/')) ref = `docker.io/library/${ref}`;
  else if (!first.includes('.') && !first.includes(':') && first !== 'localhost') ref = `docker.io/${ref}`;
  const last = ref.slice(ref.lastIndexOf('/') + 1);
  if (!last.includes(':') && !last.includes('@')) ref += ':latest';
  return ref;
}

function parseJson(path: string, member: string, content: Buffer): unknown {
  try {
    return JSON.parse(content.toString('utf8'));
  } catch (error) {
    throw notAnArchive(path, `its ${member} is not JSON (${(error as Error).message})`);
  }
}

/** The format and image names of an archive from its index members. */
export function imagesOfIndex(path: string, members: ReadonlyMap<string, Buffer>): { format: ImageArchiveFormat; names: string[] } {
  const manifest = members.get('manifest.json');
  const index = members.get('index.json');
  if (index && members.has('oci-layout')) {
    const parsed = parseJson(path, 'index.json', index) as { manifests?: Array<{ annotations?: Record<string, string> }> };
    const names = (parsed.manifests ?? []).flatMap((entry) => {
      const annotations = entry.annotations ?? {};
      const full = annotations['io.containerd.image.name'];
      const ref = annotations['org.opencontainers.image.ref.name'];
      // ref.name is often only a tag ("latest"); it names an image only as a full reference.
      if (full) return [normalizeImageName(full)];
      if (ref && /[:/]/.test(ref)) return [normalizeImageName(ref)];
      return [];
    });
    return { format: 'oci-archive', names: [...new Set(names)] };
  }
  if (manifest) {
    const parsed = parseJson(path, 'manifest.json', manifest);
    if (!Array.isArray(parsed)) throw notAnArchive(path, 'its manifest.json is not a list of images');
    const names = (parsed as Array<{ RepoTags?: string[] | null }>).flatMap((entry) => (entry.RepoTags ?? []).map(normalizeImageName));
    return { format: 'docker-archive', names: [...new Set(names)] };
  }
  throw notAnArchive(path, 'a tar archive without manifest.json (docker-archive) or index.json and oci-layout (OCI archive)');
}

/** Archive facts by file identity, so that an unchanged file is not read again in this process. */
const inspected = new Map<string, ImageArchive>();

/**
 * Reads the archive once: hashes its bytes and, through gunzip if it is compressed, reads
 * its tar headers for the index. Throws WORKLOAD_INVALID naming the file when it is missing
 * or is not an image archive.
 */
export async function inspectImageArchive(path: string, signal?: AbortSignal): Promise<ImageArchive> {
  const info = await stat(path).catch((error: NodeJS.ErrnoException) => {
    throw new K3sVmError(
      'WORKLOAD_INVALID',
      `image archive ${path} ${error.code === 'ENOENT' ? 'does not exist' : `cannot be read: ${error.message}`}`,
      {
        cause: error,
        hint: 'check the images option (K3S_VM_IMAGES); relative paths are relative to the project root',
      },
    );
  });
  if (!info.isFile()) throw notAnArchive(path, 'it is not a file');
  const identity = `${path}\0${info.dev}:${info.ino}:${info.size}:${info.mtimeMs}:${info.ctimeMs}`;
  const known = inspected.get(identity);
  if (known) return known;

  const hash = createHash('sha256');
  const reader = new TarIndexReader();
  let compression: 'gzip' | 'none' | undefined;
  let gunzip: ReturnType<typeof createGunzip> | undefined;
  let gunzipError: Error | undefined;
  const source = createReadStream(path, { highWaterMark: 1024 * 1024, signal });
  try {
    for await (const chunk of source as AsyncIterable<Buffer>) {
      hash.update(chunk);
      if (compression === undefined) {
        compression = chunk[0] === 0x1f && chunk[1] === 0x8b ? 'gzip' : 'none';
        if (compression === 'gzip') {
          gunzip = createGunzip();
          gunzip.on('data', (data: Buffer) => reader.push(data));
          gunzip.on('error', (error) => (gunzipError = error));
        } else if (chunk[0] === 0x28 && chunk[1] === 0xb5 && chunk[2] === 0x2f && chunk[3] === 0xfd) {
          throw notAnArchive(path, 'it is zstd-compressed, which is not supported; decompress it (zstd -d) or use gzip');
        }
      }
      // Once the tar has ended (or failed), only the hash still needs the bytes.
      if (reader.ended || reader.error || gunzipError) continue;
      if (gunzip) {
        if (!gunzip.write(chunk)) await new Promise((resolve) => gunzip!.once('drain', resolve));
      } else reader.push(chunk);
    }
    if (gunzip && !reader.ended && !reader.error && !gunzipError) {
      await new Promise<void>((resolve) => {
        gunzip!.once('end', resolve);
        gunzip!.once('error', () => resolve());
        gunzip!.end();
      });
    }
  } catch (error) {
    if (error instanceof K3sVmError) throw error;
    throw new K3sVmError('WORKLOAD_INVALID', `image archive ${path} cannot be read: ${(error as Error).message}`, { cause: error });
  } finally {
    gunzip?.destroy();
  }
  if (compression === undefined) throw notAnArchive(path, 'it is empty');
  if (gunzipError) throw notAnArchive(path, `its gzip stream is damaged (${gunzipError.message})`);
  if (reader.error) throw notAnArchive(path, reader.error);
  const { format, names } = imagesOfIndex(path, reader.members);
  const archive: ImageArchive = { path, bytes: info.size, digest: hash.digest('hex'), compression, format, names };
  inspected.set(identity, archive);
  return archive;
}
