import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateKeyPair } from '../../src/guest/keys.js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startFakeK3sApi, type FakeK3sApi, type FakeK3sApiOptions } from '../../fixtures/test-guest/fake-k3s-api/server.mjs';
import { K3sVmError } from '../../src/errors.js';
import type { Logger } from '../../src/log.js';
import { guestKubeconfigPath, loadKubeConfig, rewriteKubeconfig } from '../../src/kube/kubeconfig.js';
import { waitForReady, type ReadinessContext, type ReadinessStep, type WaitForReadyOptions } from '../../src/readiness/engine.js';
import * as steps from '../../src/readiness/steps.js';
import { k3sReadinessSteps, metricsApiService, requiredApiServicesFor } from '../../src/readiness/steps.js';
import type { ExecResult, GuestShell } from '../../src/guest/ssh.js';
import { freePort, startFakeSshServer } from '../guest/fake-ssh-server.js';

const serial = 'serial: last line of the boot\n';

function recordingLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return { lines, progress: (m) => lines.push(m), warn: (m) => lines.push(`warn: ${m}`), debug: () => undefined };
}

function options(overrides: Partial<WaitForReadyOptions> = {}): WaitForReadyOptions {
  return {
    target: { port: 1, privateKey: 'unused' },
    apiPort: 1,
    deadline: Date.now() + 60_000,
    steps: k3sReadinessSteps,
    logger: recordingLogger(),
    vmGone: () => undefined,
    serialTail: async () => serial,
    ...overrides,
  };
}

/** A step that passes at once, recording that it ran. */
function passing(name: string, ran: string[]): ReadinessStep {
  return {
    name,
    hint: `hint for ${name}`,
    async check() {
      ran.push(name);
    },
  };
}

/** The last step of a fake list: what the K3s steps leave behind. */
const kubeconfigStep: ReadinessStep = {
  name: 'kubeconfig present',
  hint: 'hint',
  async check(context) {
    context.kubeconfig = 'kubeconfig text';
    context.apiServerUrl = 'https://127.0.0.1:1';
  },
};

const never = () => new Promise<void>(() => undefined);

async function rejection(promise: Promise<unknown>): Promise<K3sVmError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(K3sVmError);
  return error as K3sVmError;
}

describe('waitForReady (the engine)', () => {
  it('runs the steps in order, numbering them and reporting each one with its duration', async () => {
    const ran: string[] = [];
    let attempts = 0;
    const flaky: ReadinessStep = {
      name: 'flaky',
      hint: 'hint',
      async check() {
        attempts++;
        if (attempts < 3) throw new Error(`not yet (${attempts})`);
        ran.push('flaky');
      },
    };
    const logger = recordingLogger();
    const result = await waitForReady(options({ steps: [passing('first', ran), flaky, kubeconfigStep], logger }));
    expect(ran).toEqual(['first', 'flaky']);
    expect(attempts).toBe(3);
    expect(result.kubeconfig).toBe('kubeconfig text');
    expect(result.apiServerUrl).toBe('https://127.0.0.1:1');
    expect(result.stepDurationsMs.map((s) => s.name)).toEqual(['first', 'flaky', 'kubeconfig present']);
    for (const step of result.stepDurationsMs) expect(step.ms).toBeGreaterThanOrEqual(0);
    expect(logger.lines[0]).toMatch(/^step 1 of 3 "first": waiting \(deadline (59|60) s\)$/);
    expect(logger.lines.slice(1)).toEqual([
      expect.stringMatching(/^ready: step 1 of 3 "first" \(\d+\.\d s\)$/),
      expect.stringMatching(/^ready: step 2 of 3 "flaky" \(\d+\.\d s\)$/),
      expect.stringMatching(/^ready: step 3 of 3 "kubeconfig present" \(\d+\.\d s\)$/),
    ]);
  });

  it('retries a step that throws a TypeError instead of giving up on it', async () => {
    let attempts = 0;
    const step: ReadinessStep = {
      name: 'typed',
      hint: 'hint',
      async check() {
        if (++attempts === 1) throw new TypeError('fetch failed');
      },
    };
    await waitForReady(options({ steps: [step, kubeconfigStep] }));
    expect(attempts).toBe(2);
  });

  it('names the step, its last error, the serial tail and the hint when the deadline passes', async () => {
    const last = new Error('the thing is still missing');
    const failing: ReadinessStep = {
      name: 'the thing',
      hint: 'look at the thing',
      async check() {
        throw last;
      },
    };
    const error = await rejection(
      waitForReady(options({ steps: [passing('first', []), failing, kubeconfigStep], deadline: Date.now() + 400 })),
    );
    expect(error.code).toBe('NOT_READY');
    expect(error.message).toMatch(
      /^K3s not ready before the deadline \(step 2 of 3 "the thing", waited \d+ s\); last error: the thing is still missing$/,
    );
    expect(error.details).toBe(serial);
    expect(error.hint).toBe('look at the thing');
    expect(error.cause).toBe(last);
  });

  it('ends at the deadline even while a step hangs, reporting what the step said before', async () => {
    let attempts = 0;
    const hanging: ReadinessStep = {
      name: 'hangs',
      hint: 'hint',
      check() {
        if (++attempts === 1) return Promise.reject(new Error('first answer'));
        return never();
      },
    };
    const error = await rejection(waitForReady(options({ steps: [hanging], deadline: Date.now() + 300 })));
    expect(error.message).toMatch(/step 1 of 1 "hangs".*; last error: first answer$/);
  });

  it('reports what a step was still waiting for when it reacts to the deadline itself', async () => {
    const waiting: ReadinessStep = {
      name: 'waits',
      hint: 'hint',
      check({ signal }) {
        return new Promise((_resolve, reject) => signal.addEventListener('abort', () => reject(new Error('still waiting for the widget'))));
      },
    };
    const error = await rejection(waitForReady(options({ steps: [waiting], deadline: Date.now() + 200 })));
    expect(error.message).toMatch(/; last error: still waiting for the widget$/);
  });

  it('ends at once with QEMU_EXITED when the VM goes away, naming the step', async () => {
    let gone: string | undefined;
    setTimeout(() => (gone = 'QEMU (pid 4242) exited with code 1'), 200);
    const started = Date.now();
    const error = await rejection(
      waitForReady(
        options({
          steps: [passing('first', []), { name: 'stuck', hint: 'stuck hint', check: never }],
          vmGone: () => gone,
        }),
      ),
    );
    expect(Date.now() - started).toBeLessThan(5000);
    expect(error.code).toBe('QEMU_EXITED');
    expect(error.message).toBe('the VM stopped while waiting for step 2 of 2 "stuck": QEMU (pid 4242) exited with code 1');
    expect(error.details).toBe(serial);
    expect(error.hint).toBe('stuck hint');
  });

  it('does not start a step once the VM is gone', async () => {
    const ran: string[] = [];
    const error = await rejection(waitForReady(options({ steps: [passing('first', ran)], vmGone: () => 'QEMU (pid 1) exited' })));
    expect(error.code).toBe('QEMU_EXITED');
    expect(ran).toEqual([]);
  });

  it('turns an outer abort into ABORTED, keeping the reason as the cause', async () => {
    const outer = new AbortController();
    const reason = new Error('Ctrl-C');
    setTimeout(() => outer.abort(reason), 100);
    const started = Date.now();
    const error = await rejection(waitForReady(options({ steps: [{ name: 'stuck', hint: 'hint', check: never }], signal: outer.signal })));
    expect(Date.now() - started).toBeLessThan(5000);
    expect(error.code).toBe('ABORTED');
    expect(error.message).toBe('aborted while waiting for step 1 of 1 "stuck"');
    expect(error.cause).toBe(reason);
  });

  it("passes an outer signal's K3sVmError through as it is", async () => {
    const outer = new AbortController();
    const reason = new K3sVmError('LOCK_TIMEOUT', 'someone else holds the lock');
    outer.abort(reason);
    const error = await rejection(waitForReady(options({ steps: [{ name: 'stuck', hint: 'hint', check: never }], signal: outer.signal })));
    expect(error).toBe(reason);
  });

  it('ends at once when a step calls its error fatal, keeping that error as the cause', async () => {
    const refused = new Error('the key was refused');
    let attempts = 0;
    const step: ReadinessStep = {
      name: 'login',
      hint: 'login hint',
      async check() {
        attempts++;
        throw refused;
      },
      fatal: (error) => error === refused,
    };
    const started = Date.now();
    const error = await rejection(waitForReady(options({ steps: [step] })));
    expect(Date.now() - started).toBeLessThan(5000);
    expect(attempts).toBe(1);
    expect(error.code).toBe('NOT_READY');
    expect(error.message).toBe('K3s cannot become ready (step 1 of 1 "login"); error: the key was refused');
    expect(error.cause).toBe(refused);
    expect(error.hint).toBe('login hint');
    expect(error.details).toBe(serial);
  });

  it('closes the shell a step opened, after success and after failure', async () => {
    for (const fail of [false, true]) {
      let closed = 0;
      const shell: GuestShell = {
        exec: async () => ({ stdout: '', stderr: '', exitCode: 0 }),
        readFile: async () => undefined,
        close: () => closed++,
      };
      const opens: ReadinessStep = {
        name: 'opens',
        hint: 'hint',
        async check(context) {
          context.ssh = shell;
        },
      };
      const uses: ReadinessStep = {
        name: 'uses',
        hint: 'hint',
        async check(context) {
          await context.ssh.exec('true');
          if (fail) throw new Error('no');
        },
      };
      const run = waitForReady(options({ steps: [opens, uses, kubeconfigStep], deadline: Date.now() + 300 }));
      if (fail) await rejection(run);
      else await run;
      expect(closed).toBe(1);
    }
  });

  it('says so when a step reads the SSH connection before one was opened', async () => {
    const early: ReadinessStep = {
      name: 'early',
      hint: 'hint',
      async check(context) {
        await context.ssh.exec('true');
      },
    };
    const error = await rejection(waitForReady(options({ steps: [early], deadline: Date.now() + 200 })));
    expect(error.message).toMatch(/last error: no SSH connection yet \(the step "SSH answers" has not passed\)$/);
  });
});

describe('k3sReadinessSteps', () => {
  it('are the seven steps, SSH first', () => {
    expect(k3sReadinessSteps.map((s) => s.name)).toEqual([
      'SSH answers',
      'k3s service active',
      'kubeconfig present',
      'API /readyz ok',
      'node Ready',
      'API discovery complete',
      'default ServiceAccount exists',
    ]);
    for (const step of k3sReadinessSteps) expect(step.hint).not.toBe('');
  });

  it("are the named constants, in order, for lists of one's own", () => {
    expect(k3sReadinessSteps).toEqual([
      steps.sshAnswers,
      steps.k3sServiceActive,
      steps.kubeconfigPresent,
      steps.apiReadyz,
      steps.nodeReady,
      steps.apiDiscoveryComplete,
      steps.defaultServiceAccount,
    ]);
  });

  it('end at once, naming the list, when a wait without a VM includes "SSH answers"', async () => {
    const started = Date.now();
    const error = await rejection(waitForReady(options({ target: undefined, steps: [steps.sshAnswers] })));
    expect(Date.now() - started).toBeLessThan(5000);
    expect(error.message).toMatch(/K3s cannot become ready \(step 1 of 1 "SSH answers"\); error: this wait has no VM to reach over SSH/);
  });
});

describe('step 1 "SSH answers"', () => {
  let silent: Server;
  const sockets = new Set<Socket>();

  beforeAll(async () => {
    // Accepts and never speaks, as a forwarded port does before the guest listens.
    silent = createServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  });

  afterAll(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => silent.close(resolve));
  });

  it('does not count a port that accepts connections but never completes a handshake', async () => {
    const port = (silent.address() as AddressInfo).port;
    const privateKey = generateKeyPair().privateKey;
    const error = await rejection(waitForReady(options({ target: { port, privateKey }, deadline: Date.now() + 800 })));
    expect(error.code).toBe('NOT_READY');
    expect(error.message).toMatch(
      new RegExp(
        `^K3s not ready before the deadline \\(step 1 of 7 "SSH answers", waited \\d+ s\\); last error: the SSH handshake with 127\\.0\\.0\\.1:${port} had not completed`,
      ),
    );
    expect(error.hint).toBe(k3sReadinessSteps[0]!.hint);
    expect(error.details).toBe(serial);
  });

  it('ends at once when the guest refuses the key', async () => {
    const guest = await startFakeSshServer(() => ({}));
    const other = await startFakeSshServer(() => ({}));
    try {
      const started = Date.now();
      const error = await rejection(waitForReady(options({ target: { port: guest.port, privateKey: other.privateKey } })));
      expect(Date.now() - started).toBeLessThan(5000);
      expect(error.message).toMatch(
        /^K3s cannot become ready \(step 1 of 7 "SSH answers"\); error: All configured authentication methods failed/,
      );
    } finally {
      await Promise.all([guest.close(), other.close()]);
    }
  });
});

/** A guest shell answering the two things the K3s steps ask over SSH. */
function fakeGuest(answers: { service?: ExecResult; kubeconfig?: () => string | undefined }): GuestShell & { closed: number } {
  const shell = {
    closed: 0,
    exec: async (command: string) => {
      if (command !== 'systemctl is-active k3s') return { stdout: '', stderr: `unexpected command ${command}`, exitCode: 127 };
      return answers.service ?? { stdout: 'active\n', stderr: '', exitCode: 0 };
    },
    readFile: async (path: string) => (path === guestKubeconfigPath ? answers.kubeconfig?.() : undefined),
    close: () => {
      shell.closed++;
    },
  };
  return shell;
}

/** Stands in for step 1: hands the steps after it the given shell. */
function sshStep(shell: GuestShell): ReadinessStep {
  return {
    name: 'SSH answers',
    hint: 'hint',
    async check(context) {
      context.ssh = shell;
    },
  };
}

describe('the K3s steps against the fake K3s API (a test double)', () => {
  const genCerts = fileURLToPath(new URL('../../fixtures/test-guest/fake-k3s-api/gen-certs.sh', import.meta.url));
  let tmp: string;
  let tlsDir: string;
  const apis: FakeK3sApi[] = [];
  const nodeName = 'k3s-vm-test-node';

  beforeAll(() => {
    tmp = mkdtempSync(join(tmpdir(), 'readiness-test-'));
    tlsDir = join(tmp, 'tls');
    const result = spawnSync('/bin/sh', [genCerts, tlsDir], { encoding: 'utf8' });
    if (result.status !== 0) throw new Error(`gen-certs.sh failed: ${result.stderr}`);
  });

  afterEach(async () => {
    await Promise.all(apis.splice(0).map((api) => api.close()));
  });

  afterAll(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  async function fakeApi(overrides: Partial<FakeK3sApiOptions> = {}) {
    const api = await startFakeK3sApi({ tlsDir, port: 0, nodeName, nodeReadyDelayMs: 0, log: false, ...overrides });
    apis.push(api);
    const requests: string[] = [];
    api.server.on('request', (request: { url?: string }) => requests.push(request.url ?? ''));
    return { api, requests };
  }

  /** Steps 2–7 with a fake guest shell standing in for SSH. */
  function k3sOptions(api: FakeK3sApi, overrides: Partial<WaitForReadyOptions> & { shell?: GuestShell } = {}): WaitForReadyOptions {
    const shell = overrides.shell ?? fakeGuest({ kubeconfig: () => api.kubeconfig });
    return options({
      steps: [sshStep(shell), ...k3sReadinessSteps.slice(1)],
      apiPort: api.port,
      nodeName,
      contextName: 'my-vm',
      bootStartedAt: Date.now(),
      requiredApiServices: requiredApiServicesFor(['traefik']),
      ...overrides,
    });
  }

  it('all seven steps pass against an SSH server and the fake API, and the kubeconfig points at the forwarded port', async () => {
    const { api } = await fakeApi();
    const guest = await startFakeSshServer((command) => {
      if (command === 'systemctl is-active k3s') return { stdout: 'active\n' };
      if (command.startsWith('test -f ')) return { stdout: api.kubeconfig };
      return { stderr: 'unknown command', exitCode: 127 };
    });
    try {
      const logger = recordingLogger();
      const result = await waitForReady(
        options({
          target: { port: guest.port, privateKey: guest.privateKey },
          apiPort: api.port,
          nodeName,
          contextName: 'my-vm',
          bootStartedAt: new Date(),
          logger,
        }),
      );
      expect(result.apiServerUrl).toBe(`https://127.0.0.1:${api.port}`);
      const kubeconfig = JSON.parse(result.kubeconfig);
      expect(kubeconfig['current-context']).toBe('my-vm');
      expect(kubeconfig.clusters[0].cluster.server).toBe(`https://127.0.0.1:${api.port}`);
      expect(result.stepDurationsMs.map((s) => s.name)).toEqual(k3sReadinessSteps.map((s) => s.name));
      expect(logger.lines.filter((l) => l.startsWith('ready: '))).toHaveLength(7);
      expect(logger.lines.at(-1)).toMatch(/^ready: step 7 of 7 "default ServiceAccount exists"/);
      expect(guest.commands).toEqual(['systemctl is-active k3s', `test -f ${guestKubeconfigPath} && cat ${guestKubeconfigPath}`]);
      // The engine closed the connection step 1 opened.
      await guest.waitForOpen(0);
    } finally {
      await guest.close();
    }
  });

  it('waits for the k3s service and names what systemctl says', async () => {
    const { api } = await fakeApi();
    const shell = fakeGuest({ service: { stdout: 'activating\n', stderr: '', exitCode: 3 }, kubeconfig: () => api.kubeconfig });
    const error = await rejection(waitForReady(k3sOptions(api, { shell, deadline: Date.now() + 300 })));
    expect(error.message).toMatch(
      /\(step 2 of 7 "k3s service active", waited \d+ s\); last error: systemctl is-active k3s says "activating"$/,
    );
    expect(error.hint).toBe(k3sReadinessSteps[1]!.hint);
    expect(shell.closed).toBe(1);
  });

  it('waits for the kubeconfig file to appear', async () => {
    const { api } = await fakeApi();
    let present = false;
    setTimeout(() => (present = true), 300);
    const shell = fakeGuest({ kubeconfig: () => (present ? api.kubeconfig : undefined) });
    const result = await waitForReady(k3sOptions(api, { shell }));
    expect(result.apiServerUrl).toBe(`https://127.0.0.1:${api.port}`);
    const missing = await rejection(waitForReady(k3sOptions(api, { shell: fakeGuest({}), deadline: Date.now() + 300 })));
    expect(missing.message).toMatch(/step 3 of 7 "kubeconfig present".*last error: \/etc\/rancher\/k3s\/k3s\.yaml does not exist yet$/);
  });

  it("reads the kubeconfig again when /readyz fails with the last boot's file (a rebuilt VM with a new certificate authority)", async () => {
    // The last boot's API and its kubeconfig, still on the disk; this boot's API has new certificates.
    const { api: lastBoot } = await fakeApi();
    const newTls = join(tmp, 'tls-new');
    const generated = spawnSync('/bin/sh', [genCerts, newTls], { encoding: 'utf8' });
    expect(generated.status, generated.stderr).toBe(0);
    const { api } = await fakeApi({ tlsDir: newTls });
    expect(api.kubeconfig).not.toBe(lastBoot.kubeconfig);
    // Step 3 reads the last boot's file; K3s has written its own by the next read.
    let reads = 0;
    const shell = fakeGuest({ kubeconfig: () => (++reads === 1 ? lastBoot.kubeconfig : api.kubeconfig) });
    const result = await waitForReady(k3sOptions(api, { shell, deadline: Date.now() + 10_000 }));
    expect(reads).toBe(2);
    const authority = (kubeconfig: string) => loadKubeConfig(kubeconfig).getCurrentCluster()?.caData;
    expect(authority(result.kubeconfig)).toBe(authority(api.kubeconfig));
    expect(authority(result.kubeconfig)).not.toBe(authority(lastBoot.kubeconfig));
  });

  it('fails /readyz when the forwarded API port does not answer', async () => {
    const { api } = await fakeApi();
    const closedPort = await freePort();
    const error = await rejection(waitForReady(k3sOptions(api, { apiPort: closedPort, deadline: Date.now() + 500 })));
    expect(error.message).toMatch(/\(step 4 of 7 "API \/readyz ok", waited \d+ s\)/);
  });

  it("notices the node's Ready through a watch, not by polling", async () => {
    const { api, requests } = await fakeApi({ nodeReadyDelayMs: 1500 });
    const result = await waitForReady(k3sOptions(api));
    const nodeRequests = requests.filter((url) => url.startsWith('/api/v1/nodes'));
    const lists = nodeRequests.filter((url) => !/[?&]watch=true/.test(url));
    const watches = nodeRequests.filter((url) => /[?&]watch=true/.test(url));
    // A poll would have listed the nodes about ten times while the node was NotReady.
    expect(lists).toHaveLength(1);
    expect(watches).toHaveLength(1);
    expect(lists[0]).toContain(`fieldSelector=${encodeURIComponent(`metadata.name=${nodeName}`)}`);
    expect(result.stepDurationsMs.find((s) => s.name === 'node Ready')!.ms).toBeGreaterThan(0);
  });

  it("waits for this instance's node by name", async () => {
    const { api } = await fakeApi();
    const error = await rejection(waitForReady(k3sOptions(api, { nodeName: 'another-node', deadline: Date.now() + 500 })));
    expect(error.message).toMatch(/\(step 5 of 7 "node Ready", waited \d+ s\); last error: node another-node has not registered yet$/);
    expect(error.hint).toBe(k3sReadinessSteps[4]!.hint);
  });

  it('does not accept a Ready condition reported before this boot (a reused disk keeps the last one)', async () => {
    const { api } = await fakeApi();
    // A report within the allowed clock skew counts.
    await waitForReady(k3sOptions(api, { bootStartedAt: Date.now() + 1000 }));
    // Without a boot time there is nothing to compare with: any Ready counts.
    await waitForReady(k3sOptions(api, { bootStartedAt: undefined }));
    // The fake's node reported Ready when it started: for a boot that started later, that report is stale.
    const bootStartedAt = new Date(Date.now() + 10_000);
    const error = await rejection(waitForReady(k3sOptions(api, { bootStartedAt, deadline: Date.now() + 500 })));
    expect(error.message).toMatch(
      new RegExp(
        `step 5 of 7 "node Ready".*last error: node ${nodeName} is Ready only as last reported .*, before this boot \\(${bootStartedAt.toISOString()}\\)`,
      ),
    );
  });

  it('waits for a NotReady node and names why it is not Ready', async () => {
    const { api } = await fakeApi({ nodeReadyDelayMs: 60_000 });
    const error = await rejection(waitForReady(k3sOptions(api, { deadline: Date.now() + 500 })));
    expect(error.message).toMatch(
      /step 5 of 7 "node Ready".*last error: node k3s-vm-test-node is not Ready \(KubeletNotReady: container runtime status check may not have completed yet\)$/,
    );
  });

  it('waits until every APIService is Available, watching for it', async () => {
    const { api, requests } = await fakeApi({ metricsApiServiceDelayMs: 1000 });
    await waitForReady(k3sOptions(api));
    const serviceRequests = requests.filter((url) => url.startsWith('/apis/apiregistration.k8s.io/v1/apiservices'));
    expect(serviceRequests.filter((url) => !/[?&]watch=true/.test(url))).toHaveLength(1);
    expect(serviceRequests.filter((url) => /[?&]watch=true/.test(url))).toHaveLength(1);
  });

  it('names the APIService that is not Available at the deadline', async () => {
    const { api } = await fakeApi({ metricsApiServiceDelayMs: 60_000 });
    const error = await rejection(waitForReady(k3sOptions(api, { deadline: Date.now() + 800 })));
    expect(error.message).toMatch(
      /\(step 6 of 7 "API discovery complete", waited \d+ s\); last error: APIService v1beta1\.metrics\.k8s\.io is not Available \(MissingEndpoints/,
    );
    expect(error.hint).toBe(k3sReadinessSteps[5]!.hint);
  });

  it('has nothing to wait for in API discovery when the API server has no APIService resource (404)', async () => {
    const { api } = await fakeApi();
    // An API server (not the fake) that knows no path at all.
    const bare = createHttpsServer(
      { key: readFileSync(join(tlsDir, 'server.key')), cert: readFileSync(join(tlsDir, 'server.crt')) },
      (request, response) => {
        response.writeHead(404, { 'Content-Type': 'application/json' });
        response.end(
          JSON.stringify({
            kind: 'Status',
            apiVersion: 'v1',
            status: 'Failure',
            message: 'the server could not find the requested resource',
            reason: 'NotFound',
            code: 404,
          }),
        );
      },
    );
    await new Promise<void>((resolve) => bare.listen(0, '127.0.0.1', resolve));
    try {
      const port = (bare.address() as AddressInfo).port;
      const context = stepContext(rewriteKubeconfig(api.kubeconfig, port).kubeconfig);
      await k3sReadinessSteps[5]!.check(context);
      // The same server fails the steps whose resource must exist.
      await expect(k3sReadinessSteps[6]!.check(context)).rejects.toMatchObject({ code: 404 });
    } finally {
      bare.closeAllConnections();
      await new Promise((resolve) => bare.close(resolve));
    }
  });

  describe("metrics-server's APIService", () => {
    /** An API server that answers the APIService list and the metrics API's discovery as told. */
    async function aggregator(services: readonly string[], metricsStatus: () => number) {
      const { api } = await fakeApi();
      const server = createHttpsServer(
        { key: readFileSync(join(tlsDir, 'server.key')), cert: readFileSync(join(tlsDir, 'server.crt')) },
        (request, response) => {
          const url = request.url ?? '';
          if (url.startsWith('/apis/apiregistration.k8s.io/v1/apiservices') && !url.includes('watch=true')) {
            const items = services.map((name) => ({
              metadata: { name },
              status: { conditions: [{ type: 'Available', status: 'True', reason: 'Passed', lastTransitionTime: '2026-01-01T00:00:00Z' }] },
            }));
            response.writeHead(200, { 'Content-Type': 'application/json' });
            response.end(JSON.stringify({ kind: 'APIServiceList', apiVersion: 'apiregistration.k8s.io/v1', metadata: {}, items }));
          } else if (url.startsWith('/apis/metrics.k8s.io/v1beta1')) {
            const status = metricsStatus();
            response.writeHead(status, { 'Content-Type': 'application/json' });
            response.end(
              JSON.stringify(status === 200 ? { kind: 'APIResourceList', groupVersion: 'metrics.k8s.io/v1beta1' } : { code: status }),
            );
          } else {
            // A watch that ends at once (the step then tries again).
            response.writeHead(200, { 'Content-Type': 'application/json' });
            response.end();
          }
        },
      );
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const port = (server.address() as AddressInfo).port;
      const close = async () => {
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
      };
      return { kubeconfig: rewriteKubeconfig(api.kubeconfig, port).kubeconfig, close };
    }

    it('is required unless metrics-server is disabled', () => {
      expect(requiredApiServicesFor(['traefik'])).toEqual(['v1beta1.metrics.k8s.io']);
      expect(requiredApiServicesFor([])).toEqual(['v1beta1.metrics.k8s.io']);
      expect(requiredApiServicesFor(['traefik', 'metrics-server'])).toEqual([]);
    });

    it('must be registered: a list of APIServices that are all Available but lacks it does not pass', async () => {
      const server = await aggregator(['v1.', 'v1.apps'], () => 200);
      try {
        const step = k3sReadinessSteps[5]!;
        const context = stepContext(server.kubeconfig);
        await expect(step.check({ ...context, requiredApiServices: [metricsApiService] })).rejects.toThrow(
          'APIService v1beta1.metrics.k8s.io is not registered yet',
        );
        // A cluster with metrics-server disabled has nothing more to wait for.
        await step.check(stepContext(server.kubeconfig));
      } finally {
        await server.close();
      }
    });

    it('must answer now: a stored Available condition is not believed while its API answers 503', async () => {
      let status = 503;
      const server = await aggregator(['v1.', metricsApiService], () => status);
      try {
        const context = { ...stepContext(server.kubeconfig), requiredApiServices: [metricsApiService] };
        await expect(k3sReadinessSteps[5]!.check(context)).rejects.toThrow(
          'APIService v1beta1.metrics.k8s.io reads Available, but its API does not answer yet (GET /apis/metrics.k8s.io/v1beta1: HTTP 503)',
        );
        status = 200;
        await k3sReadinessSteps[5]!.check(context);
      } finally {
        await server.close();
      }
    });
  });

  it('waits for the default ServiceAccount, watching for it', async () => {
    const { api, requests } = await fakeApi({ serviceAccountDelayMs: 1000 });
    await waitForReady(k3sOptions(api));
    const accountRequests = requests.filter((url) => url.startsWith('/api/v1/namespaces/default/serviceaccounts'));
    expect(accountRequests.filter((url) => !/[?&]watch=true/.test(url))).toHaveLength(1);
    expect(accountRequests.filter((url) => /[?&]watch=true/.test(url))).toHaveLength(1);
  });

  it('names the missing default ServiceAccount at the deadline', async () => {
    const { api } = await fakeApi({ serviceAccountDelayMs: 60_000 });
    const error = await rejection(waitForReady(k3sOptions(api, { deadline: Date.now() + 800 })));
    expect(error.message).toMatch(
      /step 7 of 7 "default ServiceAccount exists".*last error: the default ServiceAccount does not exist yet in namespace default$/,
    );
  });

  it('ends a watching step at once when the VM goes away', async () => {
    const { api } = await fakeApi({ nodeReadyDelayMs: 60_000 });
    let gone: string | undefined;
    setTimeout(() => (gone = 'QEMU (pid 7) exited'), 500);
    const started = Date.now();
    const error = await rejection(waitForReady(k3sOptions(api, { vmGone: () => gone })));
    expect(Date.now() - started).toBeLessThan(5000);
    expect(error.code).toBe('QEMU_EXITED');
    expect(error.message).toBe('the VM stopped while waiting for step 5 of 7 "node Ready": QEMU (pid 7) exited');
  });
});

/** A context for calling one step directly, as the engine would after the kubeconfig step. */
function stepContext(kubeconfig: string): ReadinessContext {
  return {
    target: { port: 1, privateKey: 'unused' },
    ssh: fakeGuest({}),
    apiPort: 1,
    contextName: undefined,
    nodeName: undefined,
    bootStartedAt: undefined,
    restoredAt: undefined,
    requiredApiServices: [],
    deadline: Date.now() + 60_000,
    signal: new AbortController().signal,
    // The process ends the keep-alive connection a step opens: the agents do not hold it open.
    onEnd: () => undefined,
    kubeconfig,
    kubeConfig: loadKubeConfig(kubeconfig),
  };
}

describe('steps that run ahead', () => {
  it('are checked together, reported in order, and the last to pass costs nothing after the first', async () => {
    let nodeReady = false;
    const checked: string[] = [];
    const waitsForNode: ReadinessStep = {
      name: 'node Ready',
      hint: 'h',
      runsAhead: true,
      async check() {
        checked.push('node');
        if (!nodeReady) throw new Error('not yet');
      },
    };
    const alreadyTrue: ReadinessStep = {
      name: 'default ServiceAccount exists',
      hint: 'h',
      runsAhead: true,
      async check() {
        checked.push('account');
      },
    };
    setTimeout(() => (nodeReady = true), 300);
    const logger = recordingLogger();
    const ready = await waitForReady(options({ steps: [kubeconfigStep, waitsForNode, alreadyTrue], logger }));
    // The second step passed while the first still waited: once only, and before the first passed.
    expect(checked.filter((c) => c === 'account')).toHaveLength(1);
    expect(checked.indexOf('account')).toBeLessThan(checked.lastIndexOf('node'));
    expect(ready.stepDurationsMs.map((s) => s.name)).toEqual(['kubeconfig present', 'node Ready', 'default ServiceAccount exists']);
    expect(ready.stepDurationsMs[2]!.ms).toBeLessThan(50);
    expect(logger.lines.filter((l) => l.startsWith('ready: ')).map((l) => l.replace(/ \(.*$/, ''))).toEqual([
      'ready: step 1 of 3 "kubeconfig present"',
      'ready: step 2 of 3 "node Ready"',
      'ready: step 3 of 3 "default ServiceAccount exists"',
    ]);
  });

  it('still name the first step that did not pass, even when a later one did', async () => {
    const stuck: ReadinessStep = {
      name: 'node Ready',
      hint: 'node hint',
      runsAhead: true,
      check: async () => Promise.reject(new Error('node n is not Ready')),
    };
    const fine: ReadinessStep = { name: 'API discovery complete', hint: 'h', runsAhead: true, check: async () => undefined };
    const error = await rejection(waitForReady(options({ steps: [kubeconfigStep, stuck, fine], deadline: Date.now() + 600 })));
    expect(error.code).toBe('NOT_READY');
    expect(error.message).toMatch(
      /^K3s not ready before the deadline \(step 2 of 3 "node Ready", waited \d+ s\); last error: node n is not Ready/,
    );
    expect(error.hint).toBe('node hint');
  });
});
