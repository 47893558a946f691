// The instance's SSH key pair (Ed25519, OpenSSH format), generated once per instance directory.
import ssh2 from 'ssh2';
import { files } from '../state/files.js';
import type { InstanceDir } from '../state/instance-dir.js';

export interface KeyPair {
  readonly privateKey: string;
  readonly publicKey: string;
}

/** Reads the instance key pair, generating it (0600) on first use. */
export async function ensureKeyPair(dir: InstanceDir, comment = 'k3s-vm'): Promise<KeyPair> {
  const privateKey = await dir.readText(files.sshKey);
  const publicKey = await dir.readText(files.sshPublicKey);
  if (privateKey && publicKey) return { privateKey, publicKey: publicKey.trim() };
  const pair = ssh2.utils.generateKeyPairSync('ed25519', { comment });
  await dir.writeAtomic(files.sshKey, pair.private, 0o600);
  await dir.writeAtomic(files.sshPublicKey, `${pair.public.trim()}\n`, 0o600);
  return { privateKey: pair.private, publicKey: pair.public.trim() };
}
