// Real image archives written with Node alone (no Docker, no registry): docker-archive or OCI, gzipped or not.
// Also imported by bench/workload.ts under Node's type stripping: node: imports only.
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

/** One tar member: a regular file, or a symbolic link when `link` is set. */
interface Member {
  readonly name: string;
  readonly data: Buffer;
  readonly mode?: number;
  readonly link?: string;
  /** A directory (name ending in `/`). */
  readonly directory?: boolean;
}

function octal(value: number, width: number): string {
  return `${value.toString(8).padStart(width - 1, '0')}\0`;
}

/** A ustar archive of regular files and symbolic links (names up to 100 bytes). */
export function tarOf(members: readonly Member[]): Buffer {
  const parts: Buffer[] = [];
  for (const member of members) {
    if (Buffer.byteLength(member.name) > 100) throw new Error(`tar member name too long: ${member.name}`);
    const header = Buffer.alloc(512);
    header.write(member.name, 0, 'utf8');
    header.write(octal(member.mode ?? (member.link ? 0o777 : member.directory ? 0o755 : 0o644), 8), 100, 'latin1');
    header.write(octal(0, 8), 108, 'latin1');
    header.write(octal(0, 8), 116, 'latin1');
    header.write(octal(member.link || member.directory ? 0 : member.data.length, 12), 124, 'latin1');
    header.write(octal(1_700_000_000, 12), 136, 'latin1');
    header.write('        ', 148, 'latin1');
    header.write(member.directory ? '5' : member.link ? '2' : '0', 156, 'latin1');
    if (member.link) header.write(member.link, 157, 'utf8');
    header.write('ustar\0', 257, 'latin1');
    header.write('00', 263, 'latin1');
    let sum = 0;
    for (const byte of header) sum += byte;
    header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    if (member.link || member.directory) {
      parts.push(header);
      continue;
    }
    parts.push(header, member.data);
    const pad = (512 - (member.data.length % 512)) % 512;
    if (pad) parts.push(Buffer.alloc(pad));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');

export interface ImageArchiveSpec {
  /** The image reference, such as `k3s-vm.test/app:1`. */
  readonly name: string;
  /** @default 'docker' */
  readonly format?: 'docker' | 'oci';
  /** @default false */
  readonly gzip?: boolean;
  /** Files of the image's one layer. @default a small /hello.txt */
  readonly files?: Readonly<Record<string, string | Buffer>>;
  /** Executable files of the layer (mode 0755). */
  readonly executables?: Readonly<Record<string, Buffer>>;
  /** Symbolic links of the layer: path → target. */
  readonly links?: Readonly<Record<string, string>>;
  /** Extra random (incompressible) bytes in the layer, for size. @default 0 */
  readonly paddingBytes?: number;
  /** The image's command. @default ['/hello'] */
  readonly cmd?: readonly string[];
}

/** The bytes of an image archive as `docker save` (or skopeo, for OCI) writes it. */
export function imageArchiveBytes(spec: ImageArchiveSpec): Buffer {
  const files: Member[] = Object.entries(spec.files ?? { 'hello.txt': `hello from ${spec.name}\n` }).map(([name, data]) => ({
    name: name.replace(/^\//, ''),
    data: Buffer.isBuffer(data) ? data : Buffer.from(data),
  }));
  for (const [name, data] of Object.entries(spec.executables ?? {})) files.push({ name: name.replace(/^\//, ''), data, mode: 0o755 });
  for (const [name, link] of Object.entries(spec.links ?? {})) files.push({ name: name.replace(/^\//, ''), data: Buffer.alloc(0), link });
  if (spec.paddingBytes) files.push({ name: 'padding.bin', data: randomBytes(spec.paddingBytes) });
  // Every parent directory as an entry of its own, before what is in it, as image builders write them.
  const directories = [
    ...new Set(
      files.flatMap((file) =>
        file.name
          .split('/')
          .slice(0, -1)
          .map((_, i, parts) => `${parts.slice(0, i + 1).join('/')}/`),
      ),
    ),
  ].sort();
  const layer = tarOf([...directories.map((name) => ({ name, data: Buffer.alloc(0), directory: true })), ...files]);
  const layerDigest = sha256(layer);
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Cmd: spec.cmd ?? ['/hello'], Env: ['PATH=/usr/bin:/bin'] },
      rootfs: { type: 'layers', diff_ids: [`sha256:${layerDigest}`] },
      history: [{ created_by: 'test/support/image-archive.ts' }],
    }),
  );
  const configDigest = sha256(config);
  let tar: Buffer;
  if ((spec.format ?? 'docker') === 'docker') {
    const [repository, tag] = [spec.name.replace(/:[^:/]*$/, ''), /:([^:/]*)$/.exec(spec.name)?.[1] ?? 'latest'];
    tar = tarOf([
      { name: `${configDigest}.json`, data: config },
      { name: `${layerDigest}/layer.tar`, data: layer },
      {
        name: 'manifest.json',
        data: Buffer.from(
          JSON.stringify([{ Config: `${configDigest}.json`, RepoTags: [spec.name], Layers: [`${layerDigest}/layer.tar`] }]),
        ),
      },
      { name: 'repositories', data: Buffer.from(JSON.stringify({ [repository]: { [tag]: layerDigest } })) },
    ]);
  } else {
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${configDigest}`, size: config.length },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: `sha256:${layerDigest}`, size: layer.length }],
      }),
    );
    const manifestDigest = sha256(manifest);
    const tag = /:([^:/]*)$/.exec(spec.name)?.[1] ?? 'latest';
    tar = tarOf([
      { name: 'oci-layout', data: Buffer.from('{"imageLayoutVersion":"1.0.0"}') },
      { name: `blobs/sha256/${layerDigest}`, data: layer },
      { name: `blobs/sha256/${configDigest}`, data: config },
      { name: `blobs/sha256/${manifestDigest}`, data: manifest },
      {
        name: 'index.json',
        data: Buffer.from(
          JSON.stringify({
            schemaVersion: 2,
            manifests: [
              {
                mediaType: 'application/vnd.oci.image.manifest.v1+json',
                digest: `sha256:${manifestDigest}`,
                size: manifest.length,
                annotations: { 'io.containerd.image.name': spec.name, 'org.opencontainers.image.ref.name': tag },
              },
            ],
          }),
        ),
      },
    ]);
  }
  return spec.gzip ? gzipSync(tar) : tar;
}

/** Writes an image archive to `path` and returns the path. */
export function writeImageArchive(path: string, spec: ImageArchiveSpec): string {
  writeFileSync(path, imageArchiveBytes(spec));
  return path;
}
