// The agreed rules for the VM's build parameters as a table of values and verdicts, shared by the Nix and TypeScript checks.

/** One value of one parameter and whether the rules accept it. */
export interface ParameterCase {
  readonly value: unknown;
  readonly accepted: boolean;
  /** Why the case is in the table, when the value alone does not say. */
  readonly note?: string;
  /**
   * Set when Nix cannot be given the value at all, so only the TypeScript check can refuse
   * it (the reason): a NUL cannot be in a command-line argument, and Nix strings end at one.
   */
  readonly typescriptOnly?: string;
}

/** The build parameters with rules, as named in nix/parameters.nix. */
export type RuledParameter =
  'name' | 'cpus' | 'memoryMiB' | 'diskSizeMiB' | 'k3sVersion' | 'extraK3sFlags' | 'disable' | 'offline' | 'sshPublicKey';

const yes = (value: unknown, note?: string): ParameterCase =>
  note === undefined ? { value, accepted: true } : { value, accepted: true, note };
const no = (value: unknown, note?: string): ParameterCase =>
  note === undefined ? { value, accepted: false } : { value, accepted: false, note };

/** Values at and around every boundary of every rule. */
export const parameterCases: Readonly<Record<RuledParameter, readonly ParameterCase[]>> = {
  name: [
    yes('k3s-vm'),
    yes('a', 'one letter'),
    yes('a'.repeat(63), '63 characters'),
    no('a'.repeat(64), '64 characters'),
    yes('k3s0'),
    yes('a-b-1'),
    no('', 'empty'),
    no('1abc', 'starts with a digit'),
    no('-abc', 'starts with a dash'),
    no('abc-', 'ends with a dash'),
    no('K3s', 'upper case'),
    no('k3s_vm', 'underscore'),
    no('k3s.vm', 'dot'),
    no('k3s vm', 'space'),
  ],
  cpus: [yes(1), yes(2), yes(256), no(0), no(257), no(-1), no(1.5), no('2', 'a string')],
  memoryMiB: [yes(1024), yes(4096), yes(1048576), no(1023), no(512), no(1048577), no(2048.5), no('4096', 'a string')],
  diskSizeMiB: [yes(2048), yes(20480), yes(16777216), no(2047), no(64), no(16777217), no(4096.5), no('20480', 'a string')],
  k3sVersion: [
    yes('', 'the default K3s'),
    yes('1_31'),
    yes('1_35'),
    yes('10_100'),
    no('1.31', 'normalised to 1_31 before Nix'),
    no('v1.31', 'normalised to 1_31 before Nix'),
    no('1'),
    no('1_'),
    no('_31'),
    no('1_31_2', 'a patch version'),
    no('latest'),
  ],
  extraK3sFlags: [
    yes([]),
    yes(['--node-label=a=b']),
    yes(['--kubelet-arg=eviction-hard=nodefs.available<5%']),
    yes(['--node-label=with space', "--x='single'", '--y="double"', '--z=back\\slash', ';', '--a=$HOME', '--b=${X}', '--c=%n%%']),
    no([''], 'an empty flag'),
    no(['--a\nb'], 'a newline'),
    no(['--a\rb'], 'a carriage return'),
    { value: ['--a\0b'], accepted: false, note: 'a NUL', typescriptOnly: 'Nix strings end at a NUL' },
    no('--a', 'not a list'),
    no([1], 'not a string'),
  ],
  disable: [
    yes([]),
    yes(['traefik']),
    yes(['traefik', 'metrics-server', 'servicelb', 'local-storage', 'coredns']),
    yes(['0day']),
    no(['']),
    no(['-x']),
    no(['Traefik']),
    no(['traefik,servicelb'], 'one name per entry'),
    no(['metrics_server']),
    no('traefik', 'not a list'),
  ],
  offline: [yes(true), yes(false), no('true', 'a string'), no(1), no(null)],
  sshPublicKey: [
    yes(''),
    yes('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGVtcHR5 k3s-vm@host'),
    yes('ssh-ed25519 AAAA "quoted" comment'),
    no('ssh-ed25519 AAAA\nssh-ed25519 BBBB', 'two lines'),
    no('ssh-ed25519 AAAA\r', 'a carriage return'),
    { value: 'ssh-ed25519 AAAA\0', accepted: false, note: 'a NUL', typescriptOnly: 'Nix strings end at a NUL' },
    no(['ssh-ed25519 AAAA'], 'not a string'),
  ],
};

/**
 * extraK3sFlags values that must reach K3s exactly as given: each becomes one quoted,
 * escaped word of the systemd ExecStart= line.
 */
export const flagsThatMustSurviveSystemd: readonly string[] = [
  '--write-kubeconfig-mode=0600',
  '--kubelet-arg=eviction-hard=nodefs.available<5%',
  '--node-label=with space',
  "--node-label=it's",
  '--node-label="double"',
  '--x=back\\slash',
  '--x=\\"escaped quote\\"',
  '--x=trailing\\',
  ';',
  '--x=a;b',
  '--x=$HOME',
  '--x=${HOME}',
  '--x=$$',
  '--x=%n%%%',
  '--x=\\n is not a newline',
  '--x=\ttab',
  '--x=#not a comment',
  '-',
];
