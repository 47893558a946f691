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
 * Reads the instance key pair, generating it (0600) on first use, or anew when the stored one
 * cannot be read (the VM is then rebuilt with the new public key).
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
