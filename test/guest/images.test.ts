// Image archives: read once for digest, format and names; the guest commands; the test guest's fake ctr against real archives.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { K3sVmError } from '../../src/errors.js';
import { inspectImageArchive, normalizeImageName } from '../../src/guest/image-archive.js';
import { guestImageMarkerDir, importCommand, writeMarkerCommand } from '../../src/guest/images.js';
import { imageArchiveBytes, tarOf, writeImageArchive } from '../helpers/image-archive.js';
import { repoRoot } from '../helpers/test-guest.js';

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
    const bytes = imageArchiveBytes({ name: 'k3s-vm.test/app:1', gzip: true });
    writeFileSync(path, bytes.subarray(0, 40));
    expect((await refusal(path)).message).toMatch(/damaged\.tar\.gz is not an image archive: its gzip stream is damaged/);
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

  it('fails on what is not an image archive, and records nothing', () => {
    const imagesFile = join(work, 'ctr-2', 'images.txt');
    const result = ctr(imagesFile, ['images', 'import', '-'], Buffer.from('nope'.repeat(200)));
    expect(result.status).toBe(1);
    expect(result.stderr.toString()).toMatch(/^ctr: unrecognized image format: no manifest\.json or index\.json/);
    expect(ctr(imagesFile, ['images', 'ls', '-q']).stdout.toString()).toBe('');
  });
});
