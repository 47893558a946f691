// One build per machine: two state directories with the same options share the test guest's build, since no instance's key is in it.
import { readdirSync, readFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { files } from '../../src/state/files.js';
import { cli, cliEnv } from '../support/cli.js';
import { freshStateDir } from '../support/test-guest.js';

/** The store entries (outputs and .drv files) of the guest derivation named after `name`. */
function storeEntriesOf(name: string): string[] {
  return readdirSync('/nix/store')
    .filter((entry) => entry.endsWith(`-test-guest-${name}`) || entry.endsWith(`-test-guest-${name}.drv`))
    .sort();
}

describe('two state directories with the same options', () => {
  it('share one build: the second `k3s-vm setup` builds nothing, adds nothing to the store and links the same store path', async () => {
    // A VM name of this run's own, so that the first setup really builds the guest.
    const name = `shared-${Date.now().toString(36)}`;
    const first = freshStateDir('shared-a');
    const second = freshStateDir('shared-b');

    const built = await cli(['setup'], cliEnv(first, { K3S_VM_NAME: name }));
    expect(built.code, built.err).toBe(0);
    expect(built.err).toMatch(/^k3s-vm: built \/nix\/store\/\S+ in /m);
    const entries = storeEntriesOf(name);
    expect(entries.length).toBeGreaterThan(0);

    const reused = await cli(['setup'], cliEnv(second, { K3S_VM_NAME: name }));
    expect(reused.code, reused.err).toBe(0);
    expect(reused.err).toMatch(/^k3s-vm: the VM \/nix\/store\/\S+ was already in the Nix store/m);
    expect(reused.err).not.toMatch(/^k3s-vm: built |nix: built [1-9]|will be (built|fetched)/m);
    expect(storeEntriesOf(name)).toEqual(entries);

    const linked = [first, second].map((dir) => realpathSync(join(dir, files.buildLink)));
    expect(linked[1]).toBe(linked[0]);
    expect(reused.out.trim()).toBe(linked[0]);
    // Each directory has a key pair of its own all the same.
    const keys = [first, second].map((dir) => readFileSync(join(dir, files.sshPublicKey), 'utf8'));
    expect(keys[1]).not.toBe(keys[0]);
  });
});
