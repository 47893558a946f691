// The programs the CLI hands the terminal to (ssh, kubectl), and files it streams (the serial log).
import { spawn } from 'node:child_process';
import { createReadStream, watch } from 'node:fs';
import { stat } from 'node:fs/promises';
import { constants } from 'node:os';
import { K3sVmError } from '../../errors.js';
import { exitCodes, type CliIo } from './io.js';

/** Runs a program on the CLI's streams and resolves its exit code (128 + signal number if killed). */
export function spawnInherit(command: string, args: string[], io: CliIo, missingHint: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      stdio: io.interactive ? 'inherit' : ['inherit', 'pipe', 'pipe'],
      env: { ...io.env } as NodeJS.ProcessEnv,
      cwd: io.cwd,
    });
    child.stdout?.on('data', (chunk: Buffer) => io.stdout.write(chunk.toString('utf8')));
    child.stderr?.on('data', (chunk: Buffer) => io.stderr.write(chunk.toString('utf8')));
    child.once('error', (error: NodeJS.ErrnoException) =>
      reject(error.code === 'ENOENT' ? new K3sVmError('TOOL_MISSING', `${command} was not found on PATH`, { hint: missingHint }) : error),
    );
    child.once('close', (code, signal) => resolve(code ?? (signal ? 128 + (constants.signals[signal] ?? 0) : exitCodes.failure)));
  });
}

/** Copies bytes [start, end) of a file to stdout. */
export function pipeRange(path: string, start: number, end: number, io: CliIo): Promise<void> {
  if (end <= start) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const stream = createReadStream(path, { start, end: end - 1, encoding: 'utf8' });
    stream.on('data', (chunk) => io.stdout.write(chunk as string));
    stream.once('end', resolve);
    stream.once('error', reject);
  });
}

/** Keeps copying what is appended to a file until Ctrl-C (a truncated file is read from its start). */
export function followFile(path: string, from: number, io: CliIo): Promise<number> {
  return new Promise((resolve) => {
    let position = from;
    let busy = false;
    const check = async () => {
      if (busy) return;
      busy = true;
      const size = await stat(path)
        .then((s) => s.size)
        .catch(() => position);
      if (size < position) position = 0;
      await pipeRange(path, position, size, io);
      position = size;
      busy = false;
    };
    const watcher = watch(path, () => void check());
    const timer = setInterval(() => void check(), 1000);
    const end = () => {
      watcher.close();
      clearInterval(timer);
      resolve(exitCodes.ok);
    };
    process.once('SIGINT', end);
  });
}
