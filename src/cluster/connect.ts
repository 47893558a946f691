// Reaching a running VM's shell without starting or holding it: one command, or the interactive client's arguments.
import { K3sVmError } from '../errors.js';
import { shellCommandLine } from '../guest/shell.js';
import { GuestSsh, type CommandInput } from '../guest/ssh.js';
import { files } from '../state/files.js';
import { InstanceDir } from '../state/instance-dir.js';
import type { ClusterOptions } from './options.js';
import { runningCluster } from './status.js';

async function sshTarget(options: ClusterOptions) {
  const status = await runningCluster(options);
  const dir = new InstanceDir(status.config.dir, status.config.names.dir);
  const privateKey = await dir.readText(files.sshKey);
  if (!privateKey) {
    throw new K3sVmError('STATE_INVALID', `the instance key ${dir.file(files.sshKey)} is missing`, {
      hint: 'stop the VM (k3s-vm stop) and start it again: a new key pair is made and built into the VM',
    });
  }
  return { port: status.runtime.sshPort, privateKey, keyPath: dir.file(files.sshKey) };
}

/**
 * Runs a command in the running VM and returns its output and exit code. One argument is a
 * command line for the guest's shell; several are an argument vector, each quoted for it.
 * `stdin` is the command's standard input (none: an empty one).
 */
export async function execInCluster(
  argv: readonly string[],
  options: ClusterOptions & { readonly stdin?: CommandInput | undefined } = {},
): Promise<{ stdout: string; stderr: string; exitCode: number | null }> {
  const target = await sshTarget(options);
  const ssh = await GuestSsh.connect(target, 10_000, options.signal);
  try {
    return await ssh.exec(shellCommandLine(argv), { signal: options.signal, stdin: options.stdin });
  } finally {
    ssh.close();
  }
}

/** The OpenSSH client arguments for an interactive root shell in the running VM. */
export async function sshClientArgs(options: ClusterOptions = {}): Promise<string[]> {
  const target = await sshTarget(options);
  return [
    '-i',
    target.keyPath,
    '-p',
    String(target.port),
    // The host key changes with every new disk; the key pair and the 127.0.0.1 forward are ours.
    '-o',
    'StrictHostKeyChecking=no',
    '-o',
    'UserKnownHostsFile=/dev/null',
    '-o',
    'LogLevel=ERROR',
    'root@127.0.0.1',
  ];
}
