// Nix's structured log read into progress counters and messages, from a real nix-build and from recorded lines.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { buildVm } from '../../src/nix/build-vm.js';
import { NixProgress, type NixLogEvent } from '../../src/nix/progress.js';
import { InstanceDir } from '../../src/state/instance-dir.js';
import { testBuildParameters } from '../support/build-parameters.js';
import { recordingLogger } from '../support/test-guest.js';

const root = mkdtempSync(join(tmpdir(), 'k3s-vm-progress-'));

function readAll(lines: readonly string[]): { progress: NixProgress; events: NixLogEvent[] } {
  const progress = new NixProgress();
  const events = lines.map((line) => progress.read(line)).filter((e): e is NixLogEvent => e !== undefined);
  return { progress, events };
}

describe('NixProgress', () => {
  it('counts builds, substitutions and downloaded bytes from recorded lines', () => {
    const { progress } = readAll([
      '@nix {"action":"start","id":1,"level":0,"text":"","type":102}',
      '@nix {"action":"start","id":2,"level":0,"text":"","type":104}',
      '@nix {"action":"start","id":3,"level":0,"text":"","type":103}',
      '@nix {"action":"result","fields":[101,1572864000],"id":1,"type":106}',
      '@nix {"action":"result","fields":[2,120,1,0],"id":2,"type":105}',
      '@nix {"action":"result","fields":[450,1800,4,0],"id":3,"type":105}',
      '@nix {"action":"start","id":4,"level":4,"text":"downloading \'https://cache.nixos.org/nar/x.nar.xz\'","type":101,"parent":5}',
      '@nix {"action":"result","fields":[104857600,209715200],"id":4,"type":105}',
      '@nix {"action":"stop","id":4}',
      '@nix {"action":"start","id":6,"level":4,"text":"downloading","type":101}',
      '@nix {"action":"result","fields":[52428800,0],"id":6,"type":105}',
    ]);
    expect(progress.summary()).toBe('built 2 of 120 derivations, fetched 450 of 1800 paths, 150 of 1500 MiB downloaded');
  });

  it('tells a run that built something from one that only found its outputs in the store', () => {
    const start = '@nix {"action":"start","id":2,"level":0,"text":"","type":104}';
    // What Nix 2.8 writes for an output already in the store: one build announced, none done.
    const found = readAll([start, '@nix {"action":"result","fields":[0,1,0,0],"id":2,"type":105}']).progress;
    expect(found.started).toBe(true);
    expect(found.didWork).toBe(false);
    const built = readAll([
      start,
      '@nix {"action":"result","fields":[1,1,0,0],"id":2,"type":105}',
      '@nix {"action":"result","fields":[0,0,0,0],"id":2,"type":105}',
    ]).progress;
    expect(built.didWork).toBe(true);
  });

  it('turns messages and build output into plain text (no colour codes)', () => {
    const { events } = readAll([
      '@nix {"action":"msg","level":0,"msg":"\\u001b[31;1merror:\\u001b[0m builder for \'/nix/store/x.drv\' failed"}',
      '@nix {"action":"result","fields":["hello from the builder"],"id":7,"type":101}',
      'a line that is not JSON',
      '',
    ]);
    expect(events).toEqual([
      { kind: 'message', level: 0, text: "error: builder for '/nix/store/x.drv' failed" },
      { kind: 'build-log', text: 'hello from the builder' },
      { kind: 'message', level: 3, text: 'a line that is not JSON' },
    ]);
  });

  it('reads what the real nix-build writes with --log-format internal-json', async () => {
    const expression = join(root, 'two.nix');
    writeFileSync(
      expression,
      `{ salt }: let step = n: builtins.derivation { name = "progress-\${salt}-\${n}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo building \${n}; /bin/mkdir $out" ]; }; in builtins.derivation { name = "progress-\${salt}"; system = builtins.currentSystem; builder = "/bin/sh"; a = step "a"; b = step "b"; args = [ "-c" "/bin/mkdir $out" ]; }\n`,
    );
    const run = await execa(
      'nix-build',
      [expression, '--no-out-link', '--argstr', 'salt', `${process.pid}-${Date.now()}`, '--log-format', 'internal-json'],
      {
        env: { NIX_CONFIG: 'substituters =' },
      },
    );
    const { progress, events } = readAll(String(run.stderr).split('\n'));
    expect(progress.summary()).toBe('built 3 of 3 derivations, 0 MiB downloaded');
    expect(events).toContainEqual({ kind: 'build-log', text: 'building a' });
    expect(events.some((e) => e.kind === 'message' && /these 3 derivations will be built|this derivation will be built/.test(e.text))).toBe(
      true,
    );
  });
});

describe('buildVm progress', () => {
  const parameters = testBuildParameters('progress', { cpus: 1, disable: [], airgapImages: false });

  it('updates one status line when the logger has one, and clears it at the end', async () => {
    const folder = join(root, 'status');
    await execa('mkdir', ['-p', folder]);
    writeFileSync(
      join(folder, 'default.nix'),
      await import('node:fs').then((fs) => fs.readFileSync(join(import.meta.dirname, '..', 'support', 'tiny-vm.nix'), 'utf8')),
    );
    const dir = new InstanceDir(join(root, 'state-status'));
    await dir.ensure();
    const statuses: string[] = [];
    const logger = { ...recordingLogger(), status: (line: string) => statuses.push(line) };
    await buildVm(dir, { nix: folder, parameters, logger });
    expect(statuses).toContain('nix: built 1 of 1 derivations, 0 MiB downloaded');
    expect(statuses.at(-1)).toBe('');
    // Build output goes to the debug lines, not over the status line.
    expect(logger.lines).toContain('debug: nix: tiny-vm: building progress with 1 CPUs');
  });

  it('writes plain progress lines when the logger has no status line', async () => {
    const folder = join(root, 'plain');
    await execa('mkdir', ['-p', folder]);
    writeFileSync(
      join(folder, 'default.nix'),
      await import('node:fs').then((fs) => fs.readFileSync(join(import.meta.dirname, '..', 'support', 'tiny-vm.nix'), 'utf8')),
    );
    const dir = new InstanceDir(join(root, 'state-plain'));
    await dir.ensure();
    const logger = recordingLogger();
    await buildVm(dir, { nix: folder, parameters: { ...parameters, cpus: 2 }, logger });
    expect(logger.lines).toContain('nix: built 1 of 1 derivations, 0 MiB downloaded');
  });
});
