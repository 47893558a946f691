// Tells working KVM from KVM that is present but cannot run code, by timing a real guest loop.
import { constants } from 'node:fs';
import { access, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';

export interface KvmProbeResult {
  readonly usable: boolean;
  /** Why not, in a sentence (empty when usable). */
  readonly reason: string;
  readonly durationMs: number;
  /** The host boot the result belongs to (/proc/sys/kernel/random/boot_id). */
  readonly bootId: string;
}

/** The udev rule that gives every user access to /dev/kvm (what hosted CI runners need). */
export const kvmUdevRule =
  'echo \'KERNEL=="kvm", GROUP="kvm", MODE="0666", OPTIONS+="static_node=kvm"\' | sudo tee /etc/udev/rules.d/99-kvm4all.rules && ' +
  'sudo udevadm control --reload-rules && sudo udevadm trigger --name-match=kvm';

/** isa-debug-exit makes QEMU exit with (value << 1) | 1. */
const exitValue = 0x2a;
const expectedExitCode = (exitValue << 1) | 1;

/**
 * A 512-byte boot sector: count ECX down from 100 million, then write to the debug-exit port.
 * Working KVM finishes in a fraction of a second; emulation in about 0.4 s; a KVM that
 * starts but cannot really run guest code never finishes. (A probe that only checks "KVM
 * starts" is fooled by the last kind.)
 */
export function probeBootSector(): Buffer {
  const code = [
    0xfa, //                         cli
    0x66,
    0xb9,
    0x00,
    0xe1,
    0xf5,
    0x05, // mov ecx, 100_000_000
    0x66,
    0x49, //                   loop: dec ecx
    0x75,
    0xfc, //                   jnz loop
    0xb0,
    exitValue, //              mov al, exitValue
    0xe6,
    0xf4, //                   out 0xf4, al
    0xf4, //                         hlt
    0xeb,
    0xfd, //                   jmp hlt
  ];
  const sector = Buffer.alloc(512);
  Buffer.from(code).copy(sector);
  sector[510] = 0x55;
  sector[511] = 0xaa;
  return sector;
}

export async function currentBootId(): Promise<string> {
  return (await readFile('/proc/sys/kernel/random/boot_id', 'utf8').catch(() => 'unknown')).trim();
}

export interface ProbeOptions {
  /** How long the guest loop may take under KVM. @default 2000 */
  readonly timeoutMs?: number;
  /** The QEMU to probe with. @default 'qemu-system-x86_64' */
  readonly qemu?: string | undefined;
  readonly devKvm?: string;
  /** Run the loop under this accelerator (tcg proves the payload itself works). @default 'kvm' */
  readonly accel?: 'kvm' | 'tcg';
}

/** Runs the probe now (no cache). */
export async function probeKvm(options: ProbeOptions = {}): Promise<KvmProbeResult> {
  const started = Date.now();
  const bootId = await currentBootId();
  const devKvm = options.devKvm ?? '/dev/kvm';
  const result = (usable: boolean, reason: string): KvmProbeResult => ({ usable, reason, durationMs: Date.now() - started, bootId });
  const accel = options.accel ?? 'kvm';
  if (accel === 'kvm') {
    try {
      await access(devKvm, constants.R_OK | constants.W_OK);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return result(false, `${devKvm} does not exist (no hardware virtualisation, or the kvm module is not loaded)`);
      return result(false, `${devKvm} is not accessible to this user (${code})`);
    }
  }
  const folder = await mkdtemp(join(tmpdir(), 'k3s-vm-kvm-probe-'));
  try {
    const image = join(folder, 'probe.img');
    await writeFile(image, probeBootSector());
    const run = await execa(
      options.qemu ?? 'qemu-system-x86_64',
      [
        '-machine',
        `pc,accel=${accel}`,
        '-nodefaults',
        '-display',
        'none',
        '-no-reboot',
        '-m',
        '16',
        '-device',
        'isa-debug-exit,iobase=0xf4,iosize=0x04',
        '-drive',
        `file=${image},format=raw,if=ide`,
      ],
      { reject: false, timeout: options.timeoutMs ?? 2000, stdin: 'ignore', killSignal: 'SIGKILL' },
    );
    if (run.exitCode === expectedExitCode) return result(true, '');
    if (run.timedOut) {
      return result(
        false,
        `${accel === 'kvm' ? `${devKvm} opens but KVM` : 'TCG'} does not run guest code: a short loop did not finish in ${options.timeoutMs ?? 2000} ms`,
      );
    }
    if (run.code === 'ENOENT') return result(false, `${options.qemu ?? 'qemu-system-x86_64'} was not found`);
    const said = String(run.stderr).trim().split('\n').at(-1) ?? '';
    return result(false, `QEMU could not use KVM (exit ${run.exitCode}${said ? `: ${said}` : ''})`);
  } finally {
    await rm(folder, { recursive: true, force: true });
  }
}

const probeCacheFile = 'kvm-probe.json';

/** The cached probe result of this host boot, if there is one (no probe is run). */
export async function readCachedProbe(cacheDir: string): Promise<KvmProbeResult | undefined> {
  const bootId = await currentBootId();
  const cached = await readFile(join(cacheDir, probeCacheFile), 'utf8')
    .then((text) => JSON.parse(text) as KvmProbeResult)
    .catch(() => undefined);
  return cached && cached.bootId === bootId && bootId !== 'unknown' ? cached : undefined;
}

/**
 * How long the loop may take in the probe whose verdict is cached for the whole host boot: a
 * cold QEMU start on a loaded CI runner (its binary and libraries not yet in the page cache)
 * can take seconds of its own, and a verdict of "unusable" would then stand until the reboot.
 * A working KVM finishes the loop in a fraction of a second, so this costs time only where
 * KVM does not work.
 */
export const cachedProbeTimeoutMs = 5000;

/** The probe result for this host boot, from the cache when there is one. */
export async function probeKvmCached(cacheDir: string, options: ProbeOptions = {}): Promise<KvmProbeResult & { cached: boolean }> {
  const cached = await readCachedProbe(cacheDir);
  if (cached) return { ...cached, cached: true };
  const cacheFile = join(cacheDir, probeCacheFile);
  const fresh = await probeKvm({ ...options, timeoutMs: options.timeoutMs ?? cachedProbeTimeoutMs });
  if (/was not found$/.test(fresh.reason)) return { ...fresh, cached: false };
  await mkdir(cacheDir, { recursive: true })
    .then(() => writeFile(cacheFile, `${JSON.stringify(fresh)}\n`))
    .catch(() => undefined);
  return { ...fresh, cached: false };
}
