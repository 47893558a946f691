// State directories that start with the suite's one key pair: no key generation per test.
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair } from '../../src/guest/keys.js';
import { files } from '../../src/state/files.js';
import { freshStateDir } from './test-guest.js';

/** One key pair for the whole suite: its state directories start with the same keys. */
const sharedKeys = join(tmpdir(), 'k3s-vm-suite-keys');

/** A new state directory that already has the suite's key pair. */
export function seededStateDir(label: string): string {
  if (!existsSync(join(sharedKeys, files.sshPublicKey))) {
    const staging = mkdtempSync(join(tmpdir(), 'k3s-vm-suite-keys-'));
    const pair = generateKeyPair('k3s-vm-suite');
    mkdirSync(join(staging, 'ssh'), { mode: 0o700 });
    writeFileSync(join(staging, files.sshKey), pair.privateKey, { mode: 0o600 });
    writeFileSync(join(staging, files.sshPublicKey), `${pair.publicKey}\n`, { mode: 0o600 });
    try {
      renameSync(staging, sharedKeys);
    } catch {
      // Another file of the suite made it first.
    }
  }
  const dir = freshStateDir(label);
  cpSync(join(sharedKeys, 'ssh'), join(dir, 'ssh'), { recursive: true });
  chmodSync(join(dir, 'ssh'), 0o700);
  return dir;
}
