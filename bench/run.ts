// The k3s-vm benchmark: boots the test guest (fixtures/test-guest) under QEMU and measures what
// a test suite waits for. `npm run bench` prints a table; `npm run bench -- --json` prints JSON.
// See bench/README.md for what each figure means and its target.
//
// Also run by itself in a child process (`node bench/run.ts --cold setup|readyz JSON`) for the
// cold-process variant of the attach figure.
import './typescript-imports.ts';
import { median, summarize, type Summary } from '../test/support/stats.ts';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import { join } from 'node:path';
import type { Client, ClientChannel } from 'ssh2';
import type { StartedCluster, StartOptions } from '../dist/index.js';
import { silentLogger } from '../dist/log.js';

const {
  consumerEnv,
  consumerVitestProject: consumerProject,
  linkPackage,
  qemuProcessesUsing,
} = await import('../test/support/consumer.js');
const { recordingNixBuild } = await import('../test/support/nix-build.js');
const { recordingLogger, repoRoot: repo, testGuestNix: testGuest } = await import('../test/support/test-guest.js');
type RecordingNixBuild = import('../test/support/nix-build.js').RecordingNixBuild;
type RecordingLogger = import('../test/support/test-guest.js').RecordingLogger;

const vmName = 'bench';
/** The readiness delay the guest is booted with for the readiness-overhead figure. */
const readyDelayMs = 3000;

/** Host wall-clock time in ms with sub-millisecond resolution, one clock for every host timestamp. */
function hostNow(): number {
  return performance.timeOrigin + performance.now();
}

// ---------------------------------------------------------------------------------------------
// Statistics and formatting

function ms(value: number): string {
  if (!Number.isFinite(value)) return '—';
  if (Math.abs(value) >= 10_000) return `${(value / 1000).toFixed(1)} s`;
  if (Math.abs(value) >= 1000) return `${(value / 1000).toFixed(2)} s`;
  if (Math.abs(value) >= 10) return `${Math.round(value)} ms`;
  return `${value.toFixed(1)} ms`;
}

function range(summary: Summary): string {
  return `${ms(summary.min)} – ${ms(summary.max)}`;
}

function ratio(value: number, baseline: number): string {
  if (!Number.isFinite(value) || !Number.isFinite(baseline) || baseline === 0) return '—';
  return `${(value / baseline).toFixed(2)}×`;
}

function table(header: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const widths = header.map((cell, column) => Math.max(cell.length, ...rows.map((row) => (row[column] ?? '').length)));
  const line = (cells: readonly string[]) => `| ${cells.map((cell, column) => cell.padEnd(widths[column]!)).join(' | ')} |`;
  return [line(header), `|${widths.map((width) => '-'.repeat(width + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

function note(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

// ---------------------------------------------------------------------------------------------
// One HTTPS /readyz request on a fresh TLS connection with the kubeconfig's client certificate

interface KubeconfigFile {
  clusters: Array<{ cluster: { server: string; 'certificate-authority-data'?: string } }>;
  users: Array<{ user: { 'client-certificate-data'?: string; 'client-key-data'?: string } }>;
}

function readyzOnce(kubeconfig: string): Promise<number> {
  const parsed = JSON.parse(kubeconfig) as KubeconfigFile;
  const cluster = parsed.clusters[0]?.cluster;
  const user = parsed.users[0]?.user;
  if (!cluster || !user) throw new Error('the kubeconfig has no cluster or no user');
  const url = new URL(cluster.server);
  const decode = (text: string | undefined) => (text === undefined ? undefined : Buffer.from(text, 'base64'));
  const started = hostNow();
  return new Promise((resolvePromise, reject) => {
    const request = https.request(
      {
        host: url.hostname,
        port: Number(url.port),
        path: '/readyz',
        agent: false,
        ca: decode(cluster['certificate-authority-data']),
        cert: decode(user['client-certificate-data']),
        key: decode(user['client-key-data']),
        timeout: 10_000,
      },
      (response) => {
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (body += chunk));
        response.on('end', () => {
          if (response.statusCode === 200 && body.trim() === 'ok') resolvePromise(hostNow() - started);
          else reject(new Error(`/readyz answered ${response.statusCode}: ${body.slice(0, 200)}`));
        });
      },
    );
    request.on('timeout', () => request.destroy(new Error('/readyz timed out')));
    request.on('error', reject);
    request.end();
  });
}

// ---------------------------------------------------------------------------------------------
// Cold mode: one measurement in this fresh process, printed as a JSON line

async function coldMain(mode: string, payload: string): Promise<void> {
  if (mode === 'setup') {
    const options = JSON.parse(payload) as StartOptions;
    const { createGlobalSetup } = await import('../dist/adapters/vitest/index.js');
    const setup = createGlobalSetup({ ...options, logger: silentLogger });
    let providedAt = Number.NaN;
    let booted: boolean | undefined;
    const started = hostNow();
    const teardown = await setup({
      provide: (_key: string, value: unknown) => {
        providedAt = hostNow();
        booted = (value as { booted?: boolean }).booted;
      },
    });
    const result = { ms: providedAt - started, booted };
    await teardown();
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } else if (mode === 'readyz') {
    process.stdout.write(`${JSON.stringify({ ms: await readyzOnce(payload) })}\n`);
  } else {
    throw new Error(`unknown cold mode ${mode}`);
  }
}

function runCold(mode: 'setup' | 'readyz', payload: string): Promise<{ ms: number; booted?: boolean }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [join(repo, 'bench', 'run.ts'), '--cold', mode, payload], { stdio: ['ignore', 'pipe', 'pipe'] });
    track(child);
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`cold ${mode} exited with ${code}: ${stderr.trim().split('\n').slice(-5).join('\n')}`));
      try {
        resolvePromise(JSON.parse(stdout.trim().split('\n').at(-1) ?? '') as { ms: number; booted?: boolean });
      } catch (error) {
        reject(new Error(`cold ${mode} printed no result: ${stdout}${stderr}`, { cause: error }));
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Clean-up: every VM this run started is stopped on exit, on error and on Ctrl-C

const children = new Set<ChildProcess>();
const stateDirs = new Set<string>();
const controller = new AbortController();
let benchRoot: string | undefined;
let cleaningUp: Promise<void> | undefined;

function track(child: ChildProcess): void {
  children.add(child);
  child.on('exit', () => children.delete(child));
}

async function waitForChildren(timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (children.size > 0 && Date.now() < deadline) await new Promise((resolvePromise) => setTimeout(resolvePromise, 100));
}

function cleanup(): Promise<void> {
  return (cleaningUp ??= (async () => {
    if (children.size > 0) {
      for (const child of children) if (child.pid !== undefined) child.kill('SIGTERM');
      await waitForChildren(30_000);
      for (const child of children) if (child.pid !== undefined) child.kill('SIGKILL');
    }
    const { stopCluster } = await import('../dist/index.js');
    for (const dir of stateDirs) {
      await stopCluster({ dir, env: {}, force: true }).catch((error: unknown) =>
        note(`could not stop the VM in ${dir}: ${(error as Error).message}`),
      );
    }
    if (benchRoot) rmSync(benchRoot, { recursive: true, force: true });
  })());
}

function onSignal(signal: NodeJS.Signals): void {
  note(`${signal}: stopping every VM this run started`);
  controller.abort(new Error(`interrupted by ${signal}`));
  void cleanup().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
}

// ---------------------------------------------------------------------------------------------
// The machine

interface Machine {
  readonly cpu: string;
  readonly cores: number;
  readonly kvmUsable: boolean;
  readonly kvmReason: string;
  /** What the VMs of this run used (cluster.accel), filled in as they start. */
  accelerator: string;
  readonly node: string;
  readonly qemu: string;
  readonly nix: string;
  readonly date: string;
  readonly loadAverageAtStart: string;
  loadAverageAtEnd?: string;
}

function firstLine(command: string, args: string[]): string {
  try {
    return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
      .split('\n')[0]!
      .trim();
  } catch {
    return 'not found';
  }
}

function loadAverage(): string {
  return os
    .loadavg()
    .map((value) => value.toFixed(2))
    .join(' ');
}

const acceleratorsUsed = new Set<string>();

function throwIfInterrupted(): void {
  if (controller.signal.aborted) throw controller.signal.reason;
}

async function describeMachine(): Promise<Machine> {
  const { probeKvm } = await import('../dist/index.js');
  const probe = await probeKvm();
  const cpuInfo = readFileSync('/proc/cpuinfo', 'utf8');
  return {
    cpu: /^model name\s*:\s*(.+)$/m.exec(cpuInfo)?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown',
    cores: os.availableParallelism(),
    kvmUsable: probe.usable,
    kvmReason: probe.reason,
    accelerator: '(no VM started)',
    node: process.version,
    qemu: firstLine('qemu-system-x86_64', ['--version']),
    nix: firstLine('nix-build', ['--version']),
    date: new Date().toISOString(),
    loadAverageAtStart: loadAverage(),
  };
}

// ---------------------------------------------------------------------------------------------
// Timing a command

function runTimed(command: string, args: string[]): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const started = hostNow();
    const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    track(child);
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolvePromise(hostNow() - started) : reject(new Error(`${command} exited with ${code}: ${stderr.slice(-500)}`)),
    );
  });
}

// ---------------------------------------------------------------------------------------------
// Starting the VM with a logger that records when each progress line arrived

/** Host time of the progress line of the last readiness step ("ready: step N of N"). */
function lastStepAt(logger: RecordingLogger): number | undefined {
  const index = logger.lines.findLastIndex((line) => {
    const step = /^ready: step (\d+) of (\d+)/.exec(line);
    return step !== null && step[1] === step[2];
  });
  return index === -1 ? undefined : logger.times[index];
}

async function start(options: StartOptions, logger: RecordingLogger): Promise<StartedCluster> {
  const { startCluster } = await import('../dist/index.js');
  try {
    const cluster = await startCluster({ ...options, logger, signal: controller.signal });
    acceleratorsUsed.add(cluster.accel);
    return cluster;
  } catch (error) {
    note(`the start failed; its last lines:\n  ${logger.lines.slice(-20).join('\n  ')}`);
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------
// Guest clock: offset against the host clock, from round trips over one SSH channel

interface ClockEstimate {
  /** Guest clock minus host clock, in ms. */
  readonly offsetMs: number;
  /** Half the round trip of the sample used: the offset is within ± this. */
  readonly uncertaintyMs: number;
  /** Host time of that sample. */
  readonly atHostMs: number;
  readonly samples: number;
}

async function openSsh(port: number, privateKey: string): Promise<Client> {
  const { default: ssh2 } = await import('ssh2');
  const client = new ssh2.Client();
  await new Promise<void>((resolvePromise, reject) => {
    client.once('ready', () => resolvePromise());
    client.once('error', reject);
    client.connect({ host: '127.0.0.1', port, username: 'root', privateKey, readyTimeout: 10_000, hostVerifier: () => true });
  });
  // Without it, each small write waits for a delayed ACK (about 40 ms per round trip).
  client.setNoDelay(true);
  return client;
}

/**
 * Sends a line to a guest shell loop that answers each line with busybox `adjtimex` (the
 * guest's CLOCK_REALTIME in µs). The sample with the smallest round trip gives
 * offset = guest − (sent + received) / 2, within ± round trip / 2.
 */
async function estimateClockOffset(client: Client, samples = 15): Promise<ClockEstimate> {
  const channel = await new Promise<ClientChannel>((resolvePromise, reject) =>
    client.exec('while read -r line; do adjtimex; done', (error, opened) => (error ? reject(error) : resolvePromise(opened))),
  );
  let buffer = '';
  let waiting: ((text: string) => void) | undefined;
  channel.setEncoding('utf8');
  channel.on('data', (chunk: string) => {
    buffer += chunk;
    const end = /return value[^\n]*\n/.exec(buffer);
    if (end && waiting) {
      const answer = buffer.slice(0, end.index + end[0].length);
      buffer = buffer.slice(end.index + end[0].length);
      const deliver = waiting;
      waiting = undefined;
      deliver(answer);
    }
  });
  const ask = () =>
    new Promise<string>((resolvePromise, reject) => {
      const timer = setTimeout(() => reject(new Error('the guest clock did not answer within 5 s')), 5000);
      waiting = (text) => {
        clearTimeout(timer);
        resolvePromise(text);
      };
      channel.write('t\n');
    });
  try {
    await ask(); // the first answer pays for starting the loop
    let best: ClockEstimate | undefined;
    for (let i = 0; i < samples; i++) {
      const sent = hostNow();
      const answer = await ask();
      const received = hostNow();
      const seconds = /time\.tv_sec:\s*(\d+)/.exec(answer)?.[1];
      const micros = /time\.tv_usec:\s*(\d+)/.exec(answer)?.[1];
      if (seconds === undefined || micros === undefined) throw new Error(`adjtimex printed no time: ${answer}`);
      const guest = Number(seconds) * 1000 + Number(micros) / 1000;
      const middle = (sent + received) / 2;
      const uncertaintyMs = (received - sent) / 2;
      if (!best || uncertaintyMs < best.uncertaintyMs) best = { offsetMs: guest - middle, uncertaintyMs, atHostMs: middle, samples };
    }
    return best!;
  } finally {
    channel.end();
    channel.close();
  }
}

// ---------------------------------------------------------------------------------------------
// The consumer project, run as its users run it

interface ConsumerRun {
  readonly wallMs: number;
  readonly exitCode: number | null;
  readonly booted: boolean;
  readonly output: string;
}

function runConsumer(dir: string): Promise<ConsumerRun> {
  const vitest = realpathSync(join(repo, 'node_modules', '.bin', 'vitest'));
  return new Promise((resolvePromise, reject) => {
    const started = hostNow();
    const child = spawn(process.execPath, [vitest, 'run'], {
      cwd: consumerProject,
      env: consumerEnv(dir),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    track(child);
    let output = '';
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    child.on('error', reject);
    child.on('close', (exitCode) =>
      resolvePromise({ wallMs: hostNow() - started, exitCode, booted: /booting consumer/.test(output), output }),
    );
  });
}

// ---------------------------------------------------------------------------------------------
// The figures

interface Args {
  readonly json: boolean;
  readonly reps: number;
  readonly readyReps: number;
  readonly runReps: number;
  readonly only: ReadonlySet<string> | undefined;
}

const figureNames = ['import', 'boot', 'build', 'ready', 'attach', 'runs'] as const;

function parseArgs(argv: readonly string[]): Args {
  let json = false;
  let reps = 5;
  // The fixture polls, so the readiness overhead varies by up to one poll period from boot
  // to boot: a few more samples steady its median.
  let readyReps = 7;
  let runReps = 5;
  let only: Set<string> | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = () => {
      const next = argv[++i];
      if (next === undefined) throw new Error(`${arg} needs a value`);
      return next;
    };
    if (arg === '--json') json = true;
    else if (arg === '--reps') reps = Number.parseInt(value(), 10);
    else if (arg === '--ready-reps') readyReps = Number.parseInt(value(), 10);
    else if (arg === '--run-reps') runReps = Number.parseInt(value(), 10);
    else if (arg === '--only') only = new Set(value().split(','));
    else if (arg === '--help' || arg === '-h') {
      process.stdout.write(
        'usage: node bench/run.ts [--json] [--reps N (default 5)] [--ready-reps N (default 7)] [--run-reps N (concurrent runs, default 5)]\n' +
          '                         [--only import,boot,build,ready,attach,runs]\n',
      );
      process.exit(0);
    } else throw new Error(`unknown argument ${arg}`);
  }
  if (!Number.isSafeInteger(reps) || reps < 1) throw new Error('--reps must be a whole number, at least 1');
  if (!Number.isSafeInteger(readyReps) || readyReps < 1) throw new Error('--ready-reps must be a whole number, at least 1');
  if (!Number.isSafeInteger(runReps) || runReps < 1) throw new Error('--run-reps must be a whole number, at least 1');
  for (const name of only ?? []) if (!(figureNames as readonly string[]).includes(name)) throw new Error(`--only: unknown figure ${name}`);
  return { json, reps, readyReps, runReps, only };
}

interface BootSample {
  readonly totalMs: number;
  readonly buildMs: number;
  readonly launchMs: number;
  readonly steps: ReadonlyArray<{ name: string; ms: number }>;
  /** Writing the kubeconfig and taking the lease, after the last step. */
  readonly kubeconfigMs: number;
  /** Config, keys, lock, accelerator and ports: what the named phases do not cover. */
  readonly otherMs: number;
}

function bootSample(cluster: StartedCluster): BootSample {
  const t = cluster.timings;
  // readyMs covers every readiness step, "SSH answers" included, plus writing the kubeconfig.
  const readinessSteps = t.steps.reduce((sum, step) => sum + step.ms, 0);
  const named = (t.buildMs ?? 0) + (t.launchMs ?? 0) + (t.readyMs ?? 0);
  return {
    totalMs: t.totalMs,
    buildMs: t.buildMs ?? Number.NaN,
    launchMs: t.launchMs ?? Number.NaN,
    steps: t.steps,
    kubeconfigMs: (t.readyMs ?? Number.NaN) - readinessSteps,
    otherMs: t.totalMs - named,
  };
}

interface StopSample {
  readonly how: string;
  readonly ms: number;
  readonly after: string;
}

interface ReadySample {
  /** Host time the fixture noticed (last step's progress line) minus host time the guest was ready. */
  readonly overheadMs: number;
  /** startCluster resolving, relative to the same moment. */
  readonly resolvedAfterMs: number;
  readonly uncertaintyMs: number;
  readonly clockOffsetMs: number;
  /** Change of the clock offset over about 2 s after the first estimate, in ms per s. */
  readonly driftMsPerS: number;
}

interface Results {
  machine?: Machine;
  boot?: { first: BootSample; firstNixCalls: number; samples: BootSample[]; unchangedStarts: number; nixCallsOnUnchangedStarts: number };
  build?: {
    buildClusterMs: number[];
    buildClusterInvokedNix: boolean[];
    nixNoopMs: number[];
    /** `k3s-vm setup` in a new state directory, then in a second one with the same options. */
    setups: Array<{ ms: number; builtOrFetched: boolean; storePath: string }>;
  };
  ready?: { delayMs: number; samples: ReadySample[] };
  imports?: { vitestAdapterMs: number[]; cliMs: number[]; vitestAloneMs: number[] };
  attach?: { warmSetupMs: number[]; warmReadyzMs: number[]; coldSetupMs: number[]; coldReadyzMs: number[]; attachedEveryTime: boolean };
  stops: StopSample[];
  runs?: {
    reps: number;
    singleMs: number[];
    quadMs: number[];
    /** Each of the four runs: its wall time and whether it booted the VM. */
    quadRuns: Array<Array<{ ms: number; booted: boolean }>>;
    bootsPerQuad: number[];
    failedRuns: number;
    qemuLeftBehind: number;
  };
  totalMs?: number;
}

async function stopGracefully(dir: string, after: string, results: Results): Promise<void> {
  const { stopCluster } = await import('../dist/index.js');
  const stopped = await stopCluster({ dir, env: {} });
  if (stopped.stop) results.stops.push({ how: stopped.stop.how, ms: stopped.stop.durationMs, after });
}

async function benchBoot(args: Args, kept: StartOptions, nix: RecordingNixBuild, results: Results): Promise<void> {
  // Kept, so that releasing the cluster leaves the VM running and stopCluster times the stop.
  const base: StartOptions = { ...kept, keep: true };
  const before = nix.count();
  note('first start in a new state directory (Nix build, new disk)');
  const first = await start(base, recordingLogger());
  const firstSample = bootSample(first);
  const firstNixCalls = nix.count() - before;
  await first.stop();
  await stopGracefully(base.dir!, 'first boot', results);
  const afterFirst = nix.count();
  const samples: BootSample[] = [];
  for (let i = 1; i <= args.reps; i++) {
    const cluster = await start(base, recordingLogger());
    if (!cluster.booted) throw new Error('expected a boot, but the start attached to a running VM');
    samples.push(bootSample(cluster));
    note(`boot ${i}/${args.reps}: ready in ${ms(cluster.timings.totalMs)}`);
    await cluster.stop();
    await stopGracefully(base.dir!, 'boot', results);
  }
  results.boot = {
    first: firstSample,
    firstNixCalls,
    samples,
    unchangedStarts: args.reps,
    nixCallsOnUnchangedStarts: nix.count() - afterFirst,
  };
}

async function benchBuild(args: Args, base: StartOptions, nix: RecordingNixBuild, root: string, results: Results): Promise<void> {
  const { buildCluster } = await import('../dist/index.js');
  // Makes sure the state directory has a current build (the boot figure may not have run);
  // the nix-build call that made it is the one replayed as the baseline.
  await buildCluster({ ...base, logger: silentLogger });
  const replay = nix.lastArgs();
  const outLink = replay.indexOf('--out-link');
  if (outLink < 0) throw new Error('the recorded nix-build call has no --out-link');
  replay[outLink + 1] = join(root, 'noop-result');
  const realNixBuild = execFileSync('sh', ['-c', 'command -v nix-build'], { encoding: 'utf8' }).trim();
  const build: NonNullable<Results['build']> = { buildClusterMs: [], buildClusterInvokedNix: [], nixNoopMs: [], setups: [] };
  await runTimed(realNixBuild, replay); // warm-up
  for (let i = 1; i <= args.reps; i++) {
    const started = hostNow();
    const result = await buildCluster({ ...base, logger: silentLogger });
    build.buildClusterMs.push(hostNow() - started);
    build.buildClusterInvokedNix.push(result.invokedNix);
    build.nixNoopMs.push(await runTimed(realNixBuild, replay));
    note(`build check ${i}/${args.reps}: buildCluster ${ms(build.buildClusterMs.at(-1)!)}, nix-build no-op ${ms(build.nixNoopMs.at(-1)!)}`);
  }
  // One build per machine: a VM name of this run's own (so the first setup really builds the
  // guest), set up in two new state directories with otherwise the same options.
  const shared = { ...base, name: `bench-${Date.now().toString(36)}`, logger: silentLogger };
  for (const label of ['first', 'second']) {
    const started = hostNow();
    const result = await buildCluster({ ...shared, dir: mkdtempSync(join(os.tmpdir(), `k3s-vm-bench-setup-${label}-`)) });
    build.setups.push({ ms: hostNow() - started, builtOrFetched: result.builtOrFetched, storePath: result.storePath });
    note(`setup in a new state directory (${label}): ${ms(build.setups.at(-1)!.ms)}, ${result.builtOrFetched ? 'built' : 'nothing built'}`);
  }
  results.build = build;
}

async function benchReady(args: Args, base: StartOptions, results: Results): Promise<void> {
  const options: StartOptions = { ...base, keep: true, kernelParams: [`k3s_fake.node_ready_delay_ms=${readyDelayMs}`] };
  const privateKey = () => readFileSync(join(base.dir!, 'ssh', 'id_ed25519'), 'utf8');
  const samples: ReadySample[] = [];
  for (let i = 1; i <= args.readyReps; i++) {
    const logger = recordingLogger();
    const cluster = await start(options, logger);
    const resolvedAt = hostNow();
    if (!cluster.booted) throw new Error('expected a boot, but the start attached to a running VM');
    const noticedAt = lastStepAt(logger);
    if (noticedAt === undefined) throw new Error('no progress line for the last readiness step');
    const client = await openSsh(cluster.sshPort, privateKey());
    let clock: ClockEstimate;
    let later: ClockEstimate;
    try {
      clock = await estimateClockOffset(client);
      await new Promise((resolvePromise) => setTimeout(resolvePromise, 2000));
      later = await estimateClockOffset(client);
    } finally {
      client.end();
    }
    const stamp = await cluster.exec('cat /run/k3s-fake-ready');
    const guestReadyAt = Number(stamp.stdout.trim());
    if (stamp.exitCode !== 0 || !Number.isFinite(guestReadyAt) || guestReadyAt <= 0) {
      throw new Error(`could not read /run/k3s-fake-ready: ${stamp.stdout}${stamp.stderr}`);
    }
    const hostReadyAt = guestReadyAt - clock.offsetMs;
    const sample: ReadySample = {
      overheadMs: noticedAt - hostReadyAt,
      resolvedAfterMs: resolvedAt - hostReadyAt,
      uncertaintyMs: clock.uncertaintyMs,
      clockOffsetMs: clock.offsetMs,
      driftMsPerS: ((later.offsetMs - clock.offsetMs) / (later.atHostMs - clock.atHostMs)) * 1000,
    };
    samples.push(sample);
    note(
      `readiness ${i}/${args.readyReps}: noticed ${ms(sample.overheadMs)} after the guest was ready (±${sample.uncertaintyMs.toFixed(1)} ms)`,
    );
    await cluster.stop();
    await stopGracefully(base.dir!, 'readiness boot', results);
  }
  results.ready = { delayMs: readyDelayMs, samples };
}

async function benchAttach(args: Args, base: StartOptions, results: Results): Promise<void> {
  const { createGlobalSetup } = await import('../dist/adapters/vitest/index.js');
  const kept = await start({ ...base, keep: true }, recordingLogger());
  await kept.stop(); // drops this process's lease; the VM is kept
  const kubeconfig = kept.kubeconfig;
  const attachOptions: StartOptions = { ...base };
  const attach: NonNullable<Results['attach']> = {
    warmSetupMs: [],
    warmReadyzMs: [],
    coldSetupMs: [],
    coldReadyzMs: [],
    attachedEveryTime: true,
  };
  const warmSetup = async () => {
    const setup = createGlobalSetup({ ...attachOptions, logger: silentLogger });
    let providedAt = Number.NaN;
    const started = hostNow();
    const teardown = await setup({
      provide: (_key: string, value: unknown) => {
        providedAt = hostNow();
        if ((value as { booted?: boolean }).booted !== false) attach.attachedEveryTime = false;
      },
    });
    await teardown();
    return providedAt - started;
  };
  // One of each first, to load and compile the code paths; not counted.
  await warmSetup();
  await readyzOnce(kubeconfig);
  for (let i = 1; i <= args.reps; i++) {
    attach.warmSetupMs.push(await warmSetup());
    attach.warmReadyzMs.push(await readyzOnce(kubeconfig));
  }
  for (let i = 1; i <= args.reps; i++) {
    const setup = await runCold('setup', JSON.stringify(attachOptions));
    if (setup.booted !== false) attach.attachedEveryTime = false;
    attach.coldSetupMs.push(setup.ms);
    attach.coldReadyzMs.push((await runCold('readyz', kubeconfig)).ms);
  }
  note(
    `attach: in-process ${ms(median(attach.warmSetupMs))} (/readyz ${ms(median(attach.warmReadyzMs))}); fresh process ${ms(median(attach.coldSetupMs))} (/readyz ${ms(median(attach.coldReadyzMs))})`,
  );
  results.attach = attach;
  await stopGracefully(base.dir!, 'kept VM', results);
}

async function benchRuns(args: Args, dir: string, results: Results): Promise<void> {
  linkPackage(consumerProject);
  note('consumer project: one run first, to build its VM (not counted)');
  const warmUp = await runConsumer(dir);
  throwIfInterrupted();
  if (warmUp.exitCode !== 0) throw new Error(`the consumer run failed (exit ${warmUp.exitCode}):\n${warmUp.output.slice(-3000)}`);
  const runs: NonNullable<Results['runs']> = {
    reps: args.runReps,
    singleMs: [],
    quadMs: [],
    quadRuns: [],
    bootsPerQuad: [],
    failedRuns: 0,
    qemuLeftBehind: 0,
  };
  for (let i = 1; i <= args.runReps; i++) {
    const single = await runConsumer(dir);
    throwIfInterrupted();
    if (single.exitCode !== 0) {
      runs.failedRuns++;
      note(`a single consumer run failed (exit ${single.exitCode}):\n${single.output.slice(-2000)}`);
    }
    runs.singleMs.push(single.wallMs);
    runs.qemuLeftBehind += qemuProcessesUsing(dir).length;
    const started = hostNow();
    const four = await Promise.all([runConsumer(dir), runConsumer(dir), runConsumer(dir), runConsumer(dir)]);
    throwIfInterrupted();
    runs.quadMs.push(hostNow() - started);
    runs.bootsPerQuad.push(four.filter((run) => run.booted).length);
    runs.quadRuns.push(four.map((run) => ({ ms: Math.round(run.wallMs), booted: run.booted })));
    for (const run of four) {
      if (run.exitCode !== 0) {
        runs.failedRuns++;
        note(`one of four concurrent consumer runs failed (exit ${run.exitCode}):\n${run.output.slice(-2000)}`);
      }
    }
    runs.qemuLeftBehind += qemuProcessesUsing(dir).length;
    note(
      `concurrent runs ${i}/${args.runReps}: one alone ${ms(single.wallMs)}, four together ${ms(runs.quadMs.at(-1)!)}, ${runs.bootsPerQuad.at(-1)} boot(s)`,
    );
  }
  results.runs = runs;
}

// ---------------------------------------------------------------------------------------------
// Start-up cost: importing the package in a fresh Node process

/** Milliseconds a fresh Node process takes to import `specifier` (the process's own start-up excluded). */
function importMs(specifier: string): number {
  const script = `const t = performance.now(); await import(${JSON.stringify(specifier)}); process.stdout.write(String(performance.now() - t));`;
  return Number(execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: repo, encoding: 'utf8' }));
}

async function benchImport(args: Args, results: Results): Promise<void> {
  const imports = { vitestAdapterMs: [] as number[], cliMs: [] as number[], vitestAloneMs: [] as number[] };
  const adapter = new URL('../dist/adapters/vitest/index.js', import.meta.url).href;
  const cli = new URL('../dist/adapters/cli/run.js', import.meta.url).href;
  for (let i = 0; i < args.reps; i++) {
    imports.vitestAloneMs.push(importMs('vitest'));
    imports.vitestAdapterMs.push(importMs(adapter));
    imports.cliMs.push(importMs(cli));
  }
  note(
    `import: k3s-vm/vitest ${ms(median(imports.vitestAdapterMs))}, CLI ${ms(median(imports.cliMs))}, vitest alone ${ms(median(imports.vitestAloneMs))}`,
  );
  results.imports = imports;
}

// ---------------------------------------------------------------------------------------------
// Report

function verdict(met: boolean): string {
  return met ? 'met' : 'MISSED';
}

function report(results: Results, args: Args): string {
  const out: string[] = [];
  const m = results.machine!;
  out.push(`k3s-vm benchmark, ${m.date}`);
  out.push(
    `machine: ${m.cpu}, ${m.cores} cores, KVM usable: ${m.kvmUsable ? 'yes' : `no (${m.kvmReason})`}, accelerator: ${m.accelerator}, ` +
      `Node ${m.node}, ${m.qemu}, ${m.nix}, load average ${m.loadAverageAtStart} at start, ${m.loadAverageAtEnd ?? '?'} at end`,
  );
  out.push('');
  const rows: string[][] = [];
  if (results.attach) {
    const a = results.attach;
    const warm = summarize(a.warmSetupMs);
    const cold = summarize(a.coldSetupMs);
    rows.push([
      '1',
      'attach to a kept VM: global setup → kubeconfig provided (in-process)',
      ms(warm.median),
      range(warm),
      `${ms(median(a.warmReadyzMs))} (one /readyz, fresh TLS)`,
      ratio(warm.median, median(a.warmReadyzMs)),
      '< 150 ms',
      verdict(warm.median < 150 && a.attachedEveryTime),
      String(warm.n),
    ]);
    rows.push([
      '1',
      'attach to a kept VM: the same, first call in a fresh Node process',
      ms(cold.median),
      range(cold),
      `${ms(median(a.coldReadyzMs))} (one /readyz, fresh process)`,
      ratio(cold.median, median(a.coldReadyzMs)),
      '< 150 ms',
      verdict(cold.median < 150 && a.attachedEveryTime),
      String(cold.n),
    ]);
  }
  if (results.imports) {
    const adapter = summarize(results.imports.vitestAdapterMs);
    const cli = summarize(results.imports.cliMs);
    const alone = median(results.imports.vitestAloneMs);
    rows.push([
      '0',
      'start-up: import k3s-vm/vitest in a fresh Node process',
      ms(adapter.median),
      range(adapter),
      `${ms(alone)} (import vitest alone)`,
      ratio(adapter.median, alone),
      '—',
      '',
      String(adapter.n),
    ]);
    rows.push(['0', 'start-up: import the CLI in a fresh Node process', ms(cli.median), range(cli), '—', '—', '—', '', String(cli.n)]);
  }
  if (results.ready) {
    const overhead = summarize(results.ready.samples.map((s) => s.overheadMs));
    const uncertainty = median(results.ready.samples.map((s) => s.uncertaintyMs));
    rows.push([
      '2',
      `readiness overhead: guest ready → fixture notices (ready delay ${results.ready.delayMs} ms)`,
      `${ms(overhead.median)} ±${uncertainty.toFixed(1)} ms`,
      range(overhead),
      '—',
      '—',
      '< 100 ms',
      verdict(overhead.median < 100),
      String(overhead.n),
    ]);
    const resolved = summarize(results.ready.samples.map((s) => s.resolvedAfterMs));
    rows.push([
      '2',
      'readiness: guest ready → startCluster resolved',
      ms(resolved.median),
      range(resolved),
      '—',
      '—',
      '—',
      '',
      String(resolved.n),
    ]);
  }
  if (results.boot) {
    const b = results.boot;
    rows.push([
      '3',
      `unchanged rebuild: Nix invocations over ${b.unchangedStarts} starts with unchanged inputs`,
      String(b.nixCallsOnUnchangedStarts),
      '—',
      `${b.firstNixCalls} on the first start in a new state dir`,
      '—',
      '0',
      verdict(b.nixCallsOnUnchangedStarts === 0),
      String(b.unchangedStarts),
    ]);
  }
  if (results.build) {
    const build = summarize(results.build.buildClusterMs);
    const noop = median(results.build.nixNoopMs);
    const invoked = results.build.buildClusterInvokedNix.filter(Boolean).length;
    rows.push([
      '3',
      `unchanged rebuild: buildCluster (Nix invoked ${invoked}×)`,
      ms(build.median),
      range(build),
      `${ms(noop)} (nix-build no-op, same args)`,
      ratio(build.median, noop),
      '< baseline',
      verdict(build.median < noop && invoked === 0),
      String(build.n),
    ]);
    const [firstSetup, secondSetup] = results.build.setups;
    if (firstSetup && secondSetup) {
      const shared = secondSetup.storePath === firstSetup.storePath && !secondSetup.builtOrFetched;
      rows.push([
        '3',
        `one build per machine: setup in a second new state dir (${secondSetup.builtOrFetched ? 'built again' : 'nothing built'}, ${secondSetup.storePath === firstSetup.storePath ? 'same' : 'another'} store path)`,
        ms(secondSetup.ms),
        '—',
        `${ms(firstSetup.ms)} (setup in the first new state dir, ${firstSetup.builtOrFetched ? 'built' : 'nothing built'})`,
        ratio(secondSetup.ms, firstSetup.ms),
        '< baseline, nothing built',
        verdict(shared && secondSetup.ms < firstSetup.ms),
        '1',
      ]);
    }
  }
  if (results.boot) {
    const total = summarize(results.boot.samples.map((s) => s.totalMs));
    rows.push([
      '4',
      'boot to ready, test guest under TCG (disk reused; phases below)',
      ms(total.median),
      range(total),
      `${ms(results.boot.first.totalMs)} (first start: build + new disk)`,
      '—',
      '—',
      '',
      String(total.n),
    ]);
  }
  if (results.stops.length > 0) {
    const stop = summarize(results.stops.map((s) => s.ms));
    const hows = new Map<string, number>();
    for (const s of results.stops) hows.set(s.how, (hows.get(s.how) ?? 0) + 1);
    const howText = [...hows].map(([how, count]) => `${how} ${count}/${results.stops.length}`).join(', ');
    rows.push([
      '5',
      `graceful stop: QMP power-down → QEMU gone (${howText})`,
      ms(stop.median),
      range(stop),
      '—',
      '—',
      'powerdown',
      verdict(hows.get('powerdown') === results.stops.length),
      String(stop.n),
    ]);
  }
  if (results.runs) {
    const r = results.runs;
    const single = summarize(r.singleMs);
    const quad = summarize(r.quadMs);
    const bootsOk = r.bootsPerQuad.every((boots) => boots === 1);
    rows.push([
      '6',
      'four concurrent consumer runs (vitest run ×4, one state dir): boots',
      r.bootsPerQuad.join(', '),
      '—',
      '—',
      '—',
      '1',
      verdict(bootsOk),
      String(r.reps),
    ]);
    rows.push([
      '6',
      `four concurrent consumer runs: wall time (${r.failedRuns} failed runs, ${r.qemuLeftBehind} QEMU left)`,
      ms(quad.median),
      range(quad),
      `${ms(single.median)} (one run alone)`,
      ratio(quad.median, single.median),
      '—',
      r.failedRuns === 0 && r.qemuLeftBehind === 0 ? '' : 'FAILED',
      String(r.reps),
    ]);
  }
  out.push(table(['#', 'figure', 'median', 'range', 'baseline (median)', 'ratio', 'target', 'result', 'n'], rows));

  if (results.boot) {
    out.push('');
    out.push(`Boot to ready by phase (medians over ${results.boot.samples.length} boots):`);
    out.push('');
    const samples = results.boot.samples;
    const phase = (label: string, values: number[]) => {
      const s = summarize(values);
      return [label, ms(s.median), range(s)];
    };
    const phaseRows: string[][] = [
      phase(
        'build check (inputs unchanged: no Nix)',
        samples.map((s) => s.buildMs),
      ),
      phase(
        'QEMU start (launch)',
        samples.map((s) => s.launchMs),
      ),
    ];
    const stepNames = samples[0]?.steps.map((step) => step.name) ?? [];
    for (const [index, name] of stepNames.entries()) {
      phaseRows.push(
        phase(
          `${index === 0 ? '' : 'readiness: '}${name}`,
          samples.map((s) => s.steps[index]?.ms ?? Number.NaN),
        ),
      );
    }
    phaseRows.push(
      phase(
        'kubeconfig written, lease taken',
        samples.map((s) => s.kubeconfigMs),
      ),
    );
    phaseRows.push(
      phase(
        'other (config, keys, lock, ports)',
        samples.map((s) => s.otherMs),
      ),
    );
    phaseRows.push(
      phase(
        'total',
        samples.map((s) => s.totalMs),
      ),
    );
    out.push(table(['phase', 'median', 'range'], phaseRows));
  }

  out.push('');
  const notes: string[] = [];
  notes.push(
    `Each figure: the median of n repetitions (${args.reps}; readiness ${args.readyReps}; concurrent runs ${args.runReps}); range is min – max.`,
  );
  if (results.ready) {
    const drift = Math.max(...results.ready.samples.map((s) => Math.abs(s.driftMsPerS)));
    const offsets = results.ready.samples.map((s) => s.clockOffsetMs);
    notes.push(
      `Readiness: guest clock minus host clock ${Math.min(...offsets).toFixed(0)} to ${Math.max(...offsets).toFixed(0)} ms across boots; ` +
        `± is half the round trip of the best of 15 clock samples; the guest clock drifted at most ${drift.toFixed(2)} ms/s.`,
    );
  }
  if (results.totalMs !== undefined) notes.push(`Total bench time: ${(results.totalMs / 60_000).toFixed(1)} min.`);
  out.push(...notes);
  return `${out.join('\n')}\n`;
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const wants = (name: (typeof figureNames)[number]) => !args.only || args.only.has(name);
  const started = hostNow();
  // No network here: without this, each nix-build waits on the binary cache.
  process.env['NIX_CONFIG'] = 'substituters =';
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, onSignal);

  benchRoot = mkdtempSync(join(os.tmpdir(), 'k3b-'));
  const vmDir = join(benchRoot, 'vm');
  const runsDir = join(benchRoot, 'runs');
  stateDirs.add(vmDir);
  stateDirs.add(runsDir);
  const nix = recordingNixBuild(benchRoot);
  const base: StartOptions = {
    projectRoot: repo,
    dir: vmDir,
    nix: testGuest,
    name: vmName,
    memoryMiB: 1024,
    diskSizeMiB: 2048,
    accel: 'tcg',
    timeoutSeconds: 240,
    env: {},
    nixBuild: nix.path,
  };

  const results: Results = { stops: [] };
  results.machine = await describeMachine();
  note(
    `machine: ${results.machine.cpu}, ${results.machine.cores} cores, KVM usable: ${results.machine.kvmUsable ? 'yes' : 'no'}; state under ${benchRoot}`,
  );
  try {
    if (wants('import')) await benchImport(args, results);
    if (wants('boot')) await benchBoot(args, base, nix, results);
    if (wants('build')) await benchBuild(args, base, nix, benchRoot, results);
    if (wants('ready')) await benchReady(args, base, results);
    if (wants('attach')) await benchAttach(args, base, results);
    if (wants('runs')) await benchRuns(args, runsDir, results);
  } finally {
    await cleanup();
  }
  results.totalMs = hostNow() - started;
  results.machine.loadAverageAtEnd = loadAverage();
  if (acceleratorsUsed.size > 0) results.machine.accelerator = [...acceleratorsUsed].join(', ');
  const text = report(results, args);
  if (args.json) {
    process.stderr.write(text);
    process.stdout.write(`${JSON.stringify({ ...results, medians: mediansOf(results) }, null, 2)}\n`);
  } else {
    process.stdout.write(text);
  }
}

function mediansOf(results: Results): Record<string, number> {
  const medians: Record<string, number> = {};
  if (results.attach) {
    medians['attachInProcessMs'] = median(results.attach.warmSetupMs);
    medians['readyzInProcessMs'] = median(results.attach.warmReadyzMs);
    medians['attachFreshProcessMs'] = median(results.attach.coldSetupMs);
    medians['readyzFreshProcessMs'] = median(results.attach.coldReadyzMs);
  }
  if (results.imports) {
    medians['importVitestAdapterMs'] = median(results.imports.vitestAdapterMs);
    medians['importCliMs'] = median(results.imports.cliMs);
    medians['importVitestAloneMs'] = median(results.imports.vitestAloneMs);
  }
  if (results.ready) {
    medians['readinessOverheadMs'] = median(results.ready.samples.map((s) => s.overheadMs));
    medians['readinessUncertaintyMs'] = median(results.ready.samples.map((s) => s.uncertaintyMs));
  }
  if (results.boot) {
    medians['nixCallsOnUnchangedStarts'] = results.boot.nixCallsOnUnchangedStarts;
    medians['bootToReadyMs'] = median(results.boot.samples.map((s) => s.totalMs));
  }
  if (results.build) {
    medians['buildClusterUnchangedMs'] = median(results.build.buildClusterMs);
    medians['nixBuildNoopMs'] = median(results.build.nixNoopMs);
    const [firstSetup, secondSetup] = results.build.setups;
    if (firstSetup && secondSetup) {
      medians['firstSetupMs'] = firstSetup.ms;
      medians['secondSetupMs'] = secondSetup.ms;
    }
  }
  if (results.stops.length > 0) medians['gracefulStopMs'] = median(results.stops.map((s) => s.ms));
  if (results.runs) {
    medians['oneConsumerRunMs'] = median(results.runs.singleMs);
    medians['fourConcurrentRunsMs'] = median(results.runs.quadMs);
    medians['bootsPerFourRuns'] = median(results.runs.bootsPerQuad);
  }
  return medians;
}

if (process.argv[2] === '--cold') {
  await coldMain(process.argv[3] ?? '', process.argv[4] ?? '');
} else {
  try {
    await main();
  } catch (error) {
    note(`failed: ${(error as Error).stack ?? String(error)}`);
    await cleanup();
    process.exitCode = 1;
  }
}

// Your workload (bench/workload.ts), on a test guest of its own: K3S_VM_BENCH_WORKLOAD=1 npm run bench.
if (process.argv[2] !== '--cold' && process.env['K3S_VM_BENCH_WORKLOAD'] === '1' && !process.exitCode) {
  const { benchWorkload, workloadRows } = await import('./workload.js');
  process.stdout.write(`\n${table(['workload', 'measured', 'target'], workloadRows(await benchWorkload({ log: note })))}\n`);
}

// Snapshots (bench/snapshot.ts), on a test guest of its own: K3S_VM_BENCH_SNAPSHOT=1 npm run bench.
if (process.argv[2] !== '--cold' && process.env['K3S_VM_BENCH_SNAPSHOT'] === '1' && !process.exitCode) {
  const { benchSnapshot, snapshotRows } = await import('./snapshot.js');
  process.stdout.write(`\n${table(['snapshot', 'measured', 'target'], snapshotRows(await benchSnapshot({ log: note })))}\n`);
}

// The real-Kubernetes test guest (bench/real-kubernetes.ts): K3S_VM_BENCH_REAL=1 npm run bench.
if (process.argv[2] !== '--cold' && process.env['K3S_VM_BENCH_REAL'] === '1' && !process.exitCode) {
  const { benchReal, realRows } = await import('./real-kubernetes.js');
  process.stdout.write(`\n${table(['real-Kubernetes guest', 'measured', 'target'], realRows(await benchReal({ log: note })))}\n`);
}

// Rewinds (bench/rewind.ts), on test guests of their own: K3S_VM_BENCH_REWIND=1 npm run bench.
if (process.argv[2] !== '--cold' && process.env['K3S_VM_BENCH_REWIND'] === '1' && !process.exitCode) {
  const { benchRewind, rewindRows } = await import('./rewind.js');
  process.stdout.write(`\n${table(['rewind', 'measured', 'target'], rewindRows(await benchRewind({ log: note })))}\n`);
}
