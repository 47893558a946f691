// Image archives: read once for digest, format and names; the guest commands; the test guest's fake ctr against real archives.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { K3sVmError } from '../../src/errors.js';
import { inspectImageArchive, normalizeImageName } from '../../src/guest/image-archive.js';
import { guestImageMarkerDir, importCommand, writeMarkerCommand } from '../../src/guest/images.js';
import { imageArchiveBytes, tarOf, writeImageArchive } from '../support/image-archive.js';
import { repoRoot } from '../support/test-guest.js';

const work = mkdtempSync(join(tmpdir(), 'k3s-vm-images-'));
const fakeCtr = join(repoRoot, 'fixtures', 'test-guest', 'guest', 'usr', 'bin', 'ctr');

async function refusal(path: string): Promise<K3sVmError> {
  const error = await inspectImageArchive(path).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(K3sVmError);
  return error as K3sVmError;
}

describe('reading an image archive', () => {
  it.each([
    ['docker', false],
    ['docker', true],
    ['oci', false],
    ['oci', true],
  ] as const)('finds the names of a %s archive (gzipped: %s) and hashes its bytes', async (format, gzip) => {
    const path = writeImageArchive(join(work, `app-${format}-${gzip}.tar${gzip ? '.gz' : ''}`), {
      name: 'k3s-vm.test/app:1',
      format,
      gzip,
    });
    const archive = await inspectImageArchive(path);
    expect(archive).toMatchObject({
      path,
      format: format === 'docker' ? 'docker-archive' : 'oci-archive',
      compression: gzip ? 'gzip' : 'none',
      names: ['k3s-vm.test/app:1'],
      bytes: readFileSync(path).length,
    });
    expect(archive.digest).toBe(createHash('sha256').update(readFileSync(path)).digest('hex'));
  });

  it('names Docker Hub images the way containerd stores them', async () => {
    const path = writeImageArchive(join(work, 'hub.tar'), { name: 'busybox:stable' });
    expect((await inspectImageArchive(path)).names).toEqual(['docker.io/library/busybox:stable']);
    expect(normalizeImageName('me/app')).toBe('docker.io/me/app:latest');
    expect(normalizeImageName('localhost:5000/app:2')).toBe('localhost:5000/app:2');
  });

  it('reads past a large layer without keeping it', async () => {
    const path = writeImageArchive(join(work, 'big.tar.gz'), { name: 'k3s-vm.test/big:1', gzip: true, paddingBytes: 8 * 1024 * 1024 });
    const archive = await inspectImageArchive(path);
    expect(archive.names).toEqual(['k3s-vm.test/big:1']);
    expect(archive.bytes).toBeGreaterThan(8 * 1024 * 1024);
  });

  it('refuses a missing file, naming it', async () => {
    const error = await refusal(join(work, 'missing.tar'));
    expect(error.code).toBe('WORKLOAD_INVALID');
    expect(error.message).toBe(`image archive ${join(work, 'missing.tar')} does not exist`);
  });

  it('refuses a file that is not a tar archive', async () => {
    const path = join(work, 'notes.tar');
    writeFileSync(path, 'these are not the bytes you are looking for\n'.repeat(20));
    const error = await refusal(path);
    expect(error.message).toBe(`${path} is not an image archive: it is not a tar archive`);
    expect(error.hint).toMatch(/docker-archive/);
  });

  it('refuses a tar archive without an image index', async () => {
    const path = join(work, 'plain.tar');
    writeFileSync(path, tarOf([{ name: 'README', data: Buffer.from('hi\n') }]));
    expect((await refusal(path)).message).toMatch(/plain\.tar is not an image archive: a tar archive without manifest\.json/);
  });

  it('refuses a damaged gzip stream', async () => {
    const path = join(work, 'damaged.tar.gz');
    const bytes = Buffer.from(imageArchiveBytes({ name: 'k3s-vm.test/app:1', gzip: true }));
    bytes.fill(0xa5, 20, 60);
    writeFileSync(path, bytes);
    expect((await refusal(path)).message).toMatch(/damaged\.tar\.gz is not an image archive: its gzip stream is damaged/);
  });

  const cases: Array<[string, Buffer, RegExp]> = [];
  const full = imageArchiveBytes({ name: 'k3s-vm.test/app:1', paddingBytes: 200_000 });
  // The layer comes before manifest.json; an archive whose index comes first is cut in its layer.
  const indexFirst = tarOf([
    { name: 'manifest.json', data: Buffer.from(JSON.stringify([{ Config: 'c.json', RepoTags: ['k3s-vm.test/app:1'], Layers: [] }])) },
    { name: 'layer.tar', data: Buffer.alloc(200_000, 1) },
  ]);
  cases.push(
    [
      'cut inside a member',
      indexFirst.subarray(0, 100_000),
      /is incomplete: it ends inside its member 2 \(shorter than its tar header says\)/,
    ],
    [
      'cut before its end-of-archive blocks',
      full.subarray(0, full.length - 1024),
      /is incomplete: it ends after member 4 without the end-of-archive blocks/,
    ],
    [
      'gzipped, cut before the gzip trailer',
      gzipSync(full).subarray(0, -8),
      /is incomplete: its gzip stream ends before its end \(no gzip trailer\)/,
    ],
    ['gzipped, cut inside a member', gzipSync(indexFirst.subarray(0, 100_000)), /is incomplete: it ends inside its member 2/],
  );
  it.each(cases)('refuses an archive %s, before anything is imported', async (label, bytes, message) => {
    const path = join(work, `cut-${label.replace(/\W+/g, '-')}.tar`);
    writeFileSync(path, bytes);
    const error = await refusal(path);
    expect(error.code).toBe('WORKLOAD_INVALID');
    expect(error.message).toContain(path);
    expect(error.message).toMatch(message);
    expect(error.hint).toMatch(/cut off/);
  });

  it.each([
    ['manifest.json', '[null]', /its manifest\.json is not a docker-archive manifest \(entry 1 is not an object\)/],
    ['manifest.json', '[{"RepoTags":"app:1"}]', /RepoTags of entry 1 is not a list of strings/],
    ['manifest.json', '[{"RepoTags":7}]', /RepoTags of entry 1 is not a list of strings/],
    ['manifest.json', '[{"RepoTags":[null]}]', /RepoTags of entry 1 is not a list of strings/],
    ['manifest.json', '{"RepoTags":["app:1"]}', /its manifest\.json is not a docker-archive manifest \(not a list of images\)/],
    ['index.json', '{"manifests":{}}', /its index\.json is not an OCI image index \("manifests" is not a list\)/],
    ['index.json', '{"manifests":[null]}', /its index\.json is not an OCI image index \(manifests\[0\] is not an object\)/],
    ['index.json', 'null', /its index\.json is not an OCI image index \(not a JSON object\)/],
    [
      'index.json',
      '{"manifests":[{"annotations":{"io.containerd.image.name":5}}]}',
      /annotations\["io\.containerd\.image\.name"\] is not a string/,
    ],
  ])('refuses a %s of the wrong shape (%s), naming the file', async (member, json, message) => {
    const path = join(work, `shape-${member}-${createHash('sha256').update(json).digest('hex').slice(0, 8)}.tar`);
    const extra = member === 'index.json' ? [{ name: 'oci-layout', data: Buffer.from('{"imageLayoutVersion":"1.0.0"}') }] : [];
    writeFileSync(path, tarOf([...extra, { name: member, data: Buffer.from(json) }]));
    const error = await refusal(path);
    expect(error.code).toBe('WORKLOAD_INVALID');
    expect(error.message).toMatch(new RegExp(`^${path.replace(/[.]/g, '\\.')} is not an image archive: `));
    expect(error.message).toMatch(message);
  });

  it('takes an untagged image (RepoTags null, as docker save of an image id writes it) as one without names', async () => {
    const path = join(work, 'untagged.tar');
    writeFileSync(path, tarOf([{ name: 'manifest.json', data: Buffer.from('[{"Config":"c.json","RepoTags":null,"Layers":[]}]') }]));
    expect((await inspectImageArchive(path)).names).toEqual([]);
  });

  it.each([
    ['a newline', 'k3s-vm.test/app:1\nk3s-vm: cluster ready', 'k3s-vm.test/app:1\\x0ak3s-vm: cluster ready'],
    ['an escape sequence', 'k3s-vm.test/app:\u001b[2J1', 'k3s-vm.test/app:\\x1b[2J1'],
    ['upper case', 'k3s-vm.test/App:1', 'k3s-vm.test/App:1'],
    ['a space', 'k3s-vm.test/app:1 2', 'k3s-vm.test/app:1 2'],
  ])('refuses an image name with %s, showing it escaped', async (_label, name, shown) => {
    for (const format of ['docker', 'oci'] as const) {
      const path = writeImageArchive(join(work, `name-${format}-${createHash('sha256').update(name).digest('hex').slice(0, 8)}.tar`), {
        name,
        format,
      });
      const error = await refusal(path);
      expect(error.code).toBe('WORKLOAD_INVALID');
      expect(error.message).toContain(`names an image "${shown}"`);
      expect(error.message).not.toMatch(/[\x00-\x1f]/);
      expect(error.hint).toMatch(/valid reference/);
    }
  });
});

describe('the guest commands', () => {
  it('gunzips in the guest, so the compressed bytes are what crosses SSH', () => {
    expect(importCommand({ compression: 'none' })).toBe('k3s ctr -n k8s.io images import -');
    expect(importCommand({ compression: 'gzip' })).toBe('set -o pipefail 2>/dev/null; gzip -dc | k3s ctr -n k8s.io images import -');
  });

  it("writes a marker with the shell's printf, quoted for the shell", () => {
    const command = writeMarkerCommand(guestImageMarkerDir, 'a'.repeat(64), { file: "it's.tar" });
    expect(command).toBe(
      `mkdir -p /var/lib/k3s-vm/images && printf '%s\\n' '{"file":"it'\\''s.tar"}' > /var/lib/k3s-vm/images/${'a'.repeat(64)}`,
    );
    const folder = join(work, 'markers');
    const run = spawnSync('/bin/sh', ['-c', writeMarkerCommand(folder, 'b'.repeat(64), { names: ['x'] })]);
    expect(run.status).toBe(0);
    expect(JSON.parse(readFileSync(join(folder, 'b'.repeat(64)), 'utf8'))).toEqual({ names: ['x'] });
  });
});

describe("the test guest's fake ctr (a test double of containerd's), under busybox as in the guest", () => {
  // busybox's applets only, the way the guest has them.
  const bin = join(work, 'busybox-bin');
  mkdirSync(bin, { recursive: true });
  for (const applet of [
    'sh',
    'cat',
    'dd',
    'od',
    'tr',
    'gzip',
    'mkfifo',
    'wc',
    'tee',
    'tar',
    'grep',
    'sed',
    'head',
    'awk',
    'mkdir',
    'dirname',
    'touch',
    'cp',
    'mv',
    'rm',
    'mktemp',
    'cut',
  ]) {
    if (!existsSync(join(bin, applet))) symlinkSync('/bin/busybox', join(bin, applet));
  }
  const ctr = (imagesFile: string, args: string[], input?: Buffer) =>
    spawnSync('/bin/busybox', ['sh', fakeCtr, '--images-file', imagesFile, '-n', 'k8s.io', ...args], {
      input,
      encoding: 'buffer',
      env: { PATH: bin, TMPDIR: work },
    });

  it('imports docker and OCI archives, gzipped or not, from standard input and lists them', () => {
    const imagesFile = join(work, 'ctr-1', 'images.txt');
    const docker = ctr(
      imagesFile,
      ['images', 'import', '-'],
      imageArchiveBytes({ name: 'k3s-vm.test/a:1', gzip: true, paddingBytes: 300_000 }),
    );
    expect(docker.stderr.toString()).toBe('');
    expect(docker.stdout.toString()).toMatch(/^unpacking k3s-vm\.test\/a:1 \(sha256:[0-9a-f]{64}\)\.\.\.done\n$/);
    const oci = ctr(imagesFile, ['images', 'import', '-'], imageArchiveBytes({ name: 'k3s-vm.test/b:2', format: 'oci' }));
    expect(oci.stderr.toString()).toBe('');
    const hub = ctr(imagesFile, ['images', 'import', '-'], imageArchiveBytes({ name: 'busybox:stable' }));
    expect(hub.stdout.toString()).toMatch(/^unpacking docker\.io\/library\/busybox:stable /);
    expect(ctr(imagesFile, ['images', 'ls', '-q']).stdout.toString()).toBe(
      'k3s-vm.test/a:1\nk3s-vm.test/b:2\ndocker.io/library/busybox:stable\n',
    );
    const lines = readFileSync(imagesFile, 'utf8').trim().split('\n');
    expect(lines[0]).toMatch(/^k3s-vm\.test\/a:1 sha256:[0-9a-f]{64} \d+$/);
    // The size is the uncompressed archive's.
    expect(Number(lines[0]!.split(' ')[2])).toBeGreaterThan(300_000);
  });

  it('a second import of the same name replaces its line', () => {
    const imagesFile = join(work, 'ctr-3', 'images.txt');
    ctr(imagesFile, ['images', 'import', '-'], imageArchiveBytes({ name: 'k3s-vm.test/a:1' }));
    ctr(imagesFile, ['images', 'import', '-'], imageArchiveBytes({ name: 'k3s-vm.test/a:1', files: { 'other.txt': 'changed' } }));
    expect(ctr(imagesFile, ['images', 'ls', '-q']).stdout.toString()).toBe('k3s-vm.test/a:1\n');
  });

  it.each([false, true])('fails on a stream cut off inside a member (gzipped: %s), as containerd does, and records nothing', (gzip) => {
    const imagesFile = join(work, `ctr-cut-${gzip}`, 'images.txt');
    // The index first, so that what arrives names an image: only the cut can fail it.
    const tar = tarOf([
      { name: 'manifest.json', data: Buffer.from(JSON.stringify([{ Config: 'c.json', RepoTags: ['k3s-vm.test/cut:1'], Layers: [] }])) },
      { name: 'layer.tar', data: Buffer.alloc(200_000, 1) },
    ]).subarray(0, 100_000);
    const result = ctr(imagesFile, ['images', 'import', '-'], gzip ? gzipSync(tar) : tar);
    expect(result.status).toBe(1);
    expect(result.stderr.toString()).toMatch(/^ctr: failed to read the image archive: .*short read.* \(unexpected EOF\)$/m);
    expect(result.stdout.toString()).toBe('');
    expect(ctr(imagesFile, ['images', 'ls', '-q']).stdout.toString()).toBe('');
  });

  it('fails on a gzip stream without its trailer', () => {
    const imagesFile = join(work, 'ctr-trailer', 'images.txt');
    const result = ctr(imagesFile, ['images', 'import', '-'], imageArchiveBytes({ name: 'k3s-vm.test/cut:1', gzip: true }).subarray(0, -8));
    expect(result.status).toBe(1);
    expect(result.stderr.toString()).toMatch(/^ctr: failed to read the image archive: gzip: .* \(unexpected EOF\)$/m);
    expect(ctr(imagesFile, ['images', 'ls', '-q']).stdout.toString()).toBe('');
  });

  it('fails on what is not an image archive, and records nothing', () => {
    const imagesFile = join(work, 'ctr-2', 'images.txt');
    const result = ctr(imagesFile, ['images', 'import', '-'], Buffer.from('nope'.repeat(200)));
    expect(result.status).toBe(1);
    expect(result.stderr.toString()).toMatch(/^ctr: unrecognized image format: no manifest\.json or index\.json/);
    expect(ctr(imagesFile, ['images', 'ls', '-q']).stdout.toString()).toBe('');
  });
});
