// The instance's SSH key pair (Ed25519, OpenSSH format), generated once per instance directory.
import ssh2 from 'ssh2';
import { files } from '../state/files.js';
import type { InstanceDir } from '../state/instance-dir.js';

export interface KeyPair {
  readonly privateKey: string;
  readonly publicKey: string;
}

function parses(privateKey: string, publicKey: string): boolean {
  return !(ssh2.utils.parseKey(privateKey) instanceof Error) && !(ssh2.utils.parseKey(publicKey) instanceof Error);
}

/**
 * A new Ed25519 key pair that ssh2 can read back. ssh2's generator now and then (about 2 in
 * 1000 pairs) writes a private key its own parser refuses as "Malformed OpenSSH private key";
 * such a pair is thrown away and another made.
 */
export function generateKeyPair(comment = 'k3s-vm'): KeyPair {
  for (;;) {
    const pair = ssh2.utils.generateKeyPairSync('ed25519', { comment });
    const publicKey = pair.public.trim();
    if (parses(pair.private, publicKey)) return { privateKey: pair.private, publicKey };
  }
}

/**
 * The kernel command-line word that gives the VM the instance's public key at boot (the run
 * script's QEMU_KERNEL_PARAMS): the key is not part of the build, so every state directory with
 * the same options shares one. The guest (nix/vm.nix, the test guest's rcS) decodes it into
 * root's authorized keys at each boot. Base64, because a kernel parameter cannot hold the
 * spaces of a key line; a dotted name, because the kernel hands unknown undotted `name=value`
 * words to init as environment variables.
 */
export function authorizedKeyKernelParam(publicKey: string): string {
  return `${authorizedKeyParamName}=${Buffer.from(publicKey.trim(), 'utf8').toString('base64')}`;
}

/** The name of the kernel parameter authorizedKeyKernelParam writes. */
export const authorizedKeyParamName = 'k3s_vm.ssh_key';

/**
 * Reads the instance key pair, generating it (0600) on first use, or anew when the stored one
 * cannot be read (the VM is then given the new public key at its next boot).
 */
export async function ensureKeyPair(dir: InstanceDir, comment = 'k3s-vm'): Promise<KeyPair> {
  const privateKey = await dir.readText(files.sshKey);
  const publicKey = await dir.readText(files.sshPublicKey);
  if (privateKey && publicKey && parses(privateKey, publicKey.trim())) return { privateKey, publicKey: publicKey.trim() };
  const pair = generateKeyPair(comment);
  await dir.writeAtomic(files.sshKey, pair.privateKey, 0o600);
  await dir.writeAtomic(files.sshPublicKey, `${pair.publicKey}\n`, 0o600);
  return pair;
}
