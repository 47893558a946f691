// The instance directory: creation with safe permissions, atomic writes, typed reads.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { K3sVmError } from '../errors.js';
import { files } from './files.js';

export class InstanceDir {
  constructor(readonly path: string) {}

  /** Absolute path of a file in the directory. */
  file(name: string): string {
    return join(this.path, name);
  }

  exists(name: string): boolean {
    return existsSync(this.file(name));
  }

  /** Creates the directory (0700) with its .gitignore, if missing. */
  async ensure(): Promise<void> {
    await mkdir(this.path, { recursive: true, mode: 0o700 });
    await chmod(this.path, 0o700);
    if (!this.exists(files.gitignore)) {
      await this.writeAtomic(files.gitignore, '# Created by k3s-vm: this directory holds keys and VM state.\n*\n', 0o644);
    }
  }

  /** Writes via a temporary file and rename, so readers see the old or the new content, never half. */
  async writeAtomic(name: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
    const target = this.file(name);
    await mkdir(dirname(target), { recursive: true, mode: 0o700 });
    const temp = `${target}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      await writeFile(temp, data, { mode });
      await chmod(temp, mode);
      await rename(temp, target);
    } catch (error) {
      await rm(temp, { force: true });
      throw error;
    }
  }

  async writeJson(name: string, value: unknown): Promise<void> {
    await this.writeAtomic(name, `${JSON.stringify(value, null, 2)}\n`);
  }

  async readText(name: string): Promise<string | undefined> {
    try {
      return await readFile(this.file(name), 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
  }

  /** Reads JSON; a file that exists but does not parse is reported, not silently ignored. */
  async readJson<T>(name: string): Promise<T | undefined> {
    const text = await this.readText(name);
    if (text === undefined) return undefined;
    try {
      return JSON.parse(text) as T;
    } catch (error) {
      throw new K3sVmError('STATE_INVALID', `${this.file(name)} is not valid JSON`, {
        cause: error,
        hint: `delete ${this.file(name)} (k3s-vm rewrites it on the next start)`,
      });
    }
  }

  async remove(name: string): Promise<void> {
    await rm(this.file(name), { force: true, recursive: true });
  }
}
