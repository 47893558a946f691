// The instance directory: created private, git-ignored, written atomically.
import { mkdtempSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { files } from '../../src/state/files.js';
import { InstanceDir } from '../../src/state/instance-dir.js';

const root = mkdtempSync(join(tmpdir(), 'k3s-vm-state-'));

async function freshDir(name: string): Promise<InstanceDir> {
  const dir = new InstanceDir(join(root, name));
  await dir.ensure();
  return dir;
}

describe('the instance directory', () => {
  it('is created 0700 and ignores itself in git', async () => {
    const dir = await freshDir('perms');
    expect(statSync(dir.path).mode & 0o777).toBe(0o700);
    expect(await dir.readText(files.gitignore)).toMatch(/^\*$/m);
  });

  it('writes files atomically with mode 0600 and leaves no temporary files', async () => {
    const dir = await freshDir('atomic');
    await Promise.all(Array.from({ length: 20 }, (_, i) => dir.writeJson(files.runtime, { i })));
    expect(statSync(dir.file(files.runtime)).mode & 0o777).toBe(0o600);
    // Exactly one of the twenty writes, whole: interleaved writes would not parse or mix keys.
    const written = JSON.parse(readFileSync(dir.file(files.runtime), 'utf8')) as { i: number };
    expect(Object.keys(written)).toEqual(['i']);
    expect(Array.from({ length: 20 }, (_, i) => i)).toContain(written.i);
    expect(await dir.readJson(files.runtime)).toEqual(written);
    expect(readdirSync(dir.path).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });

  it('reports a corrupt JSON file with the remedy', async () => {
    const dir = await freshDir('corrupt');
    await dir.writeAtomic(files.runtime, '{not json');
    await expect(dir.readJson(files.runtime)).rejects.toMatchObject({ code: 'STATE_INVALID', hint: expect.stringContaining('delete') });
  });
});
