// Reads an image archive once: its sha256, its compression, its format and the image names its own index gives.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { pipeline, Transform } from 'node:stream';
import { createGunzip } from 'node:zlib';
import tarStream, { type Extract } from 'tar-stream';
import { abortError, K3sVmError } from '../errors.js';

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

/** Members of an image archive that say what is in it; anything else is only read past. */
const indexMembers = new Set(['manifest.json', 'index.json', 'oci-layout', 'repositories']);
/** An index member larger than this is not one. */
const maxIndexBytes = 4 * 1024 * 1024;
/** The end of a tar archive: two blocks of zeros after the last member. */
const endOfArchiveBytes = 1024;

const remedy = 'give a docker-archive (docker save, podman save, nixpkgs dockerTools) or an OCI archive, as .tar or .tar.gz';

const notAnArchive = (path: string, found: string) =>
  new K3sVmError('WORKLOAD_INVALID', `${path} is not an image archive: ${found}`, { hint: remedy });

const cutOff = (path: string, found: string) =>
  new K3sVmError('WORKLOAD_INVALID', `image archive ${path} is incomplete: ${found}`, {
    hint: 'the file was cut off (a download or a copy that did not finish, or a full disk while it was written): write it again',
  });

/** Text from an archive as it may be shown on a terminal: control characters (escape sequences, newlines) spelt out. */
export function printable(text: string): string {
  return text.replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
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

// The grammar of github.com/distribution/reference (what containerd accepts), for a full reference.
const domainPart = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const domain = `(?:${domainPart}(?:\\.${domainPart})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?`;
const pathComponent = '[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*';
const tag = '[\\w][\\w.-]{0,127}';
const digest = '[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}';
const fullReference = new RegExp(`^${domain}/${pathComponent}(?:/${pathComponent})*(?::${tag})?(?:@${digest})?$`);

/** Whether a (normalised) name is an image reference containerd takes; names are at most 255 characters before tag and digest. */
export function isImageReference(reference: string): boolean {
  if (!fullReference.test(reference)) return false;
  const name = reference.replace(/@.*$/, '').replace(/:[\w][\w.-]*$/, '');
  return name.length <= 255;
}

function parseJson(path: string, member: string, content: Buffer): unknown {
  try {
    return JSON.parse(content.toString('utf8'));
  } catch (error) {
    throw notAnArchive(path, `its ${member} is not JSON (${(error as Error).message})`);
  }
}

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);

/** The reference an archive names, normalised; WORKLOAD_INVALID (the name shown escaped) when it is not an image reference. */
function imageName(path: string, member: string, raw: string): string {
  const name = normalizeImageName(raw);
  if (!isImageReference(name)) {
    throw new K3sVmError(
      'WORKLOAD_INVALID',
      `image archive ${path} names an image "${printable(raw)}" in its ${member}, which is not an image reference`,
      {
        hint: 'tag the image with a valid reference (registry/name:tag: lower-case name, tag of letters, digits, _ . -) and save it again',
      },
    );
  }
  return name;
}

/** The format and image names of an archive from its index members; WORKLOAD_INVALID naming the member when one has the wrong shape. */
export function imagesOfIndex(path: string, members: ReadonlyMap<string, Buffer>): { format: ImageArchiveFormat; names: string[] } {
  const manifest = members.get('manifest.json');
  const index = members.get('index.json');
  if (index && members.has('oci-layout')) {
    const parsed = parseJson(path, 'index.json', index);
    const wrong = (what: string) => notAnArchive(path, `its index.json is not an OCI image index (${what})`);
    if (!isObject(parsed)) throw wrong('not a JSON object');
    const manifests = parsed['manifests'] ?? [];
    if (!Array.isArray(manifests)) throw wrong('"manifests" is not a list');
    const names = manifests.flatMap((entry: unknown, i) => {
      if (!isObject(entry)) throw wrong(`manifests[${i}] is not an object`);
      const annotations = entry['annotations'] ?? {};
      if (!isObject(annotations)) throw wrong(`manifests[${i}].annotations is not an object`);
      const full = annotations['io.containerd.image.name'];
      const ref = annotations['org.opencontainers.image.ref.name'];
      for (const [key, value] of [
        ['io.containerd.image.name', full],
        ['org.opencontainers.image.ref.name', ref],
      ] as const) {
        if (value !== undefined && typeof value !== 'string') throw wrong(`manifests[${i}].annotations["${key}"] is not a string`);
      }
      // ref.name is often only a tag ("latest"); it names an image only as a full reference.
      if (typeof full === 'string' && full) return [imageName(path, 'index.json', full)];
      if (typeof ref === 'string' && /[:/]/.test(ref)) return [imageName(path, 'index.json', ref)];
      return [];
    });
    return { format: 'oci-archive', names: [...new Set(names)] };
  }
  if (manifest) {
    const parsed = parseJson(path, 'manifest.json', manifest);
    const wrong = (what: string) => notAnArchive(path, `its manifest.json is not a docker-archive manifest (${what})`);
    if (!Array.isArray(parsed)) throw wrong('not a list of images');
    const names = parsed.flatMap((entry: unknown, i) => {
      if (!isObject(entry)) throw wrong(`entry ${i + 1} is not an object`);
      const tags = entry['RepoTags'] ?? [];
      if (!Array.isArray(tags) || tags.some((t) => typeof t !== 'string'))
        throw wrong(`RepoTags of entry ${i + 1} is not a list of strings`);
      return (tags as string[]).map((t) => imageName(path, 'manifest.json', t));
    });
    return { format: 'docker-archive', names: [...new Set(names)] };
  }
  throw notAnArchive(path, 'a tar archive without manifest.json (docker-archive) or index.json and oci-layout (OCI archive)');
}

/** Archive facts by file identity, so that an unchanged file is not read again in this process. */
const inspected = new Map<string, ImageArchive>();

/** The first bytes of a file (fewer if it is shorter). */
async function headOf(path: string, length: number): Promise<Buffer> {
  const handle = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buffer, 0, length, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

const isZlibError = (error: unknown) => /^Z_/.test(String((error as NodeJS.ErrnoException | undefined)?.code ?? ''));

/** Writes a chunk to the tar reader, waiting while it is busy (or until it fails). */
function writeTo(extract: Extract, chunk: Buffer, failed: Promise<never>): Promise<void> | undefined {
  if (extract.write(chunk)) return undefined;
  return Promise.race([new Promise<void>((resolve) => extract.once('drain', () => resolve())), failed]);
}

/**
 * Reads the archive once, to its end: hashes its bytes and, through gunzip if it is compressed,
 * reads every tar member (keeping only the index members), so that an archive cut off
 * part-way (a member shorter than its header says, no end of archive, no gzip trailer) is
 * refused here, before anything boots. Throws WORKLOAD_INVALID naming the file when it is
 * missing, is not an image archive, is incomplete or names images that are not references;
 * from names where the path came from for the remedy of one that cannot be read: the setting as
 * the user gave it (`--images`, `K3S_VM_IMAGES`, `option images`), or the path itself.
 */
export async function inspectImageArchive(path: string, signal?: AbortSignal, from = 'the path'): Promise<ImageArchive> {
  const unreadable = (error: NodeJS.ErrnoException) =>
    new K3sVmError(
      'WORKLOAD_INVALID',
      `image archive ${path} ${error.code === 'ENOENT' ? 'does not exist' : `cannot be read: ${error.message}`}`,
      {
        cause: error,
        hint: `check ${from}; relative paths are relative to the project root`,
      },
    );
  const info = await stat(path).catch((error: NodeJS.ErrnoException) => {
    throw unreadable(error);
  });
  if (!info.isFile()) throw notAnArchive(path, 'it is not a file');
  const identity = `${path}\0${info.dev}:${info.ino}:${info.size}:${info.mtimeMs}:${info.ctimeMs}`;
  const known = inspected.get(identity);
  if (known) return known;

  const magic = await headOf(path, 4).catch((error: NodeJS.ErrnoException) => {
    throw unreadable(error);
  });
  if (magic.length === 0) throw notAnArchive(path, 'it is empty');
  if (magic[0] === 0x28 && magic[1] === 0xb5 && magic[2] === 0x2f && magic[3] === 0xfd)
    throw notAnArchive(path, 'it is zstd-compressed, which is not supported; decompress it (zstd -d) or use gzip');
  const compression = magic[0] === 0x1f && magic[1] === 0x8b ? 'gzip' : 'none';

  const hash = createHash('sha256');
  const hashing = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      callback(null, chunk);
    },
  });
  const source = createReadStream(path, { highWaterMark: 1024 * 1024, signal });
  const plain: AsyncIterable<Buffer> =
    compression === 'gzip' ? pipeline(source, hashing, createGunzip(), () => {}) : pipeline(source, hashing, () => {});

  const members = new Map<string, Buffer>();
  const extract = tarStream.extract();
  let entries = 0;
  /** Where the last member's data (padded to a block) ends in the tar stream. */
  let lastEnd = 0;
  let tarBytes = 0;
  extract.on('entry', (header, stream, next) => {
    entries++;
    const size = header.size;
    // The member's data follows its header, which starts at stream.offset.
    lastEnd = stream.offset + 512 + Math.ceil(size / 512) * 512;
    const name = header.name.replace(/^\.\//, '');
    const keep = header.type === 'file' && indexMembers.has(name) && size <= maxIndexBytes;
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: unknown) => {
      if (keep) chunks.push(chunk as Buffer);
    });
    // A member cut short fails with the archive, which reports it.
    stream.on('error', () => undefined);
    stream.once('end', () => {
      if (keep) members.set(name, Buffer.concat(chunks));
      next();
    });
  });
  const failed = new Promise<never>((_resolve, reject) => extract.once('error', reject));
  const finished = Promise.race([new Promise<void>((resolve) => extract.once('finish', () => resolve())), failed]);
  // Awaited below, or not at all when reading the file failed first.
  failed.catch(() => undefined);
  finished.catch(() => undefined);
  try {
    try {
      for await (const chunk of plain) {
        tarBytes += chunk.length;
        await writeTo(extract, chunk, failed);
      }
    } catch (error) {
      if (extract.destroyed) await failed;
      throw error;
    }
    extract.end(undefined);
    await finished;
  } catch (error) {
    if (error instanceof K3sVmError) throw error;
    if (signal?.aborted) throw abortError(signal);
    const message = (error as Error).message;
    if (isZlibError(error)) {
      throw /unexpected end of file/i.test(message)
        ? cutOff(path, 'its gzip stream ends before its end (no gzip trailer)')
        : notAnArchive(path, `its gzip stream is damaged (${message})`);
    }
    if (/Unexpected end of data/.test(message)) {
      throw entries === 0
        ? notAnArchive(path, 'it is not a tar archive')
        : cutOff(path, `it ends inside its member ${entries} (shorter than its tar header says)`);
    }
    if (/Invalid tar header|Header exceeds|Invalid header/.test(message)) {
      throw notAnArchive(path, entries === 0 ? 'it is not a tar archive' : `a damaged tar header after ${entries} members`);
    }
    throw new K3sVmError('WORKLOAD_INVALID', `image archive ${path} cannot be read: ${message}`, { cause: error });
  } finally {
    source.destroy();
    extract.destroy();
  }
  if (entries === 0 && tarBytes < endOfArchiveBytes) throw notAnArchive(path, 'it is not a tar archive');
  if (tarBytes - lastEnd < endOfArchiveBytes)
    throw cutOff(path, `it ends after member ${entries} without the end-of-archive blocks that tar writes`);
  const { format, names } = imagesOfIndex(path, members);
  const archive: ImageArchive = { path, bytes: info.size, digest: hash.digest('hex'), compression, format, names };
  inspected.set(identity, archive);
  return archive;
}
