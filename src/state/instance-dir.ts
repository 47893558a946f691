// The instance directory: creation with safe permissions, atomic writes, typed reads.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { settingName } from '../config/names.js';
import { K3sVmError } from '../errors.js';
import { files } from './files.js';

/** The state directory's setting as a message names it when the caller knows no better. */
const dirVariable = settingName({}, 'dir');

/** What to do about a failed file operation, by its errno code; dirName is how the user named the state directory. */
function ioHint(code: string | undefined, path: string, dirName: string): string {
  switch (code) {
    case 'ENOSPC':
    case 'EDQUOT':
      return `free some space on the file system that holds ${path} (df -h ${dirname(path)}), then run again; nothing was lost`;
    case 'EACCES':
    case 'EPERM':
      return `make ${path} writable for this user, or choose another state directory (${dirName})`;
    case 'EROFS':
      return `${path} is on a read-only file system: choose another state directory (${dirName})`;
    case 'EISDIR':
    case 'ENOTDIR':
    case 'ENOTEMPTY':
    case 'EEXIST':
      return `something else is in the way at ${path}: move it aside, then run again`;
    default:
      return `check ${path} and the file system it is on, then run again`;
  }
}

/**
 * Wraps a failed read or write of a state file in a STATE_WRITE_FAILED error that names the
 * path and the remedy (a full disk, a read-only directory, a directory in the way). dirName is
 * how the user named the state directory (`--dir`, `K3S_VM_DIR`, `option dir`).
 */
export function stateIoError(error: unknown, path: string, action = 'write', dirName = dirVariable): K3sVmError {
  if (error instanceof K3sVmError) return error;
  const code = (error as NodeJS.ErrnoException).code;
  const reason = code === 'ENOSPC' ? 'no space left on the device (ENOSPC)' : error instanceof Error ? error.message : String(error);
  return new K3sVmError('STATE_WRITE_FAILED', `could not ${action} ${path}: ${reason}`, {
    cause: error,
    hint: ioHint(code, path, dirName),
  });
}

export class InstanceDir {
  /** dirName: how the user named the state directory, for the remedy of a failed write (the config's names.dir). */
  constructor(
    readonly path: string,
    readonly dirName: string = dirVariable,
  ) {}

  /** A failed read or write of a file in this directory, as STATE_WRITE_FAILED (stateIoError). */
  ioError(error: unknown, path: string, action = 'write'): K3sVmError {
    return stateIoError(error, path, action, this.dirName);
  }

  /** Absolute path of a file in the directory. */
  file(name: string): string {
    return join(this.path, name);
  }

  exists(name: string): boolean {
    return existsSync(this.file(name));
  }

  /** Creates the directory (0700) with its .gitignore, if missing. */
  async ensure(): Promise<void> {
    try {
      await mkdir(this.path, { recursive: true, mode: 0o700 });
      await chmod(this.path, 0o700);
    } catch (error) {
      throw this.ioError(error, this.path, 'create the state directory');
    }
    if (!this.exists(files.gitignore)) {
      await this.writeAtomic(files.gitignore, '# Created by k3s-vm: this directory holds keys and VM state.\n*\n');
    }
  }

  /** Writes via a temporary file and rename, so readers see the old or the new content, never half. */
  async writeAtomic(name: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
    const target = this.file(name);
    const temp = `${target}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      await mkdir(dirname(target), { recursive: true, mode: 0o700 });
      await writeFile(temp, data, { mode });
      await chmod(temp, mode);
      await rename(temp, target);
    } catch (error) {
      await rm(temp, { force: true }).catch(() => undefined);
      throw this.ioError(error, target);
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
      throw this.ioError(error, this.file(name), 'read');
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
    try {
      await rm(this.file(name), { force: true, recursive: true });
    } catch (error) {
      throw this.ioError(error, this.file(name), 'remove');
    }
  }
}
