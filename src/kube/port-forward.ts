// portForward: a local port on 127.0.0.1 forwarded to a port of a Pod, or of a ready Pod behind a Service.
import { createServer, type Server, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import type { KubeConfig, V1Pod, V1Service, V1ServicePort } from '@kubernetes/client-node';
import { abortError, K3sVmError, throwIfAborted } from '../errors.js';
import { apiErrorText } from './kubeconfig.js';
import { clientNode } from './client-node.js';
import { describeState } from './conditions.js';
import { readPod } from './pods.js';
import { checkTarget, describeTarget, type ObjectTarget } from './target.js';

/** A running port-forward. Close it when done (the fixtures do at the test's teardown). */
export interface PortForwardHandle {
  /** `http://127.0.0.1:<port>`. */
  readonly url: string;
  /** The local port on 127.0.0.1. */
  readonly port: number;
  /** The Pod the connections go to (a Service's is chosen once, when the forward opens). */
  readonly pod: { readonly name: string; readonly namespace: string };
  /** The Pod's port the connections go to (a Service's target port, resolved). */
  readonly remotePort: number;
  /** Why the last connection failed, once one did: the Pod is gone, or not listening, … */
  readonly error: K3sVmError | undefined;
  /**
   * `fetch` of a path on the forward (`forward.fetch('/healthz')`); when the connection fails,
   * it rejects with what became of the Pod (PORT_FORWARD_FAILED) rather than a bare socket error.
   */
  fetch(path: string, init?: RequestInit): Promise<Response>;
  /** Stops listening and ends the open connections. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export interface PortForwardOptions {
  /** The local port. @default a free one */
  readonly localPort?: number | undefined;
  /** Aborts opening the forward. */
  readonly signal?: AbortSignal | undefined;
}

type ContainerPort = { name?: string; containerPort: number; protocol?: string };

function containerPortsOf(pod: V1Pod): ContainerPort[] {
  return (pod.spec?.containers ?? []).flatMap((c) => (c.ports ?? []) as ContainerPort[]);
}

function listPorts(ports: ContainerPort[]): string {
  return ports.map((p) => `${p.containerPort}${p.name ? ` (${p.name})` : ''}`).join(', ');
}

/**
 * The Pod port a port of a Pod refers to: a name must be one of its container ports; a number
 * must be one it declares, when it declares any (a Pod that declares none may listen anywhere).
 */
export function podPortFor(pod: V1Pod, port: number | string): number {
  const ports = containerPortsOf(pod).filter((p) => (p.protocol ?? 'TCP') === 'TCP');
  const podName = `Pod ${pod.metadata?.namespace}/${pod.metadata?.name}`;
  const has = ports.length ? `it declares the ports ${listPorts(ports)}` : 'it declares no ports';
  if (typeof port === 'string') {
    const found = ports.find((p) => p.name === port);
    if (found) return found.containerPort;
    throw new K3sVmError('PORT_FORWARD_FAILED', `${podName} has no port named ${port}; ${has}`, {
      hint: 'forward a port by its number or by one of those names',
    });
  }
  if (ports.length === 0 || ports.some((p) => p.containerPort === port)) return port;
  throw new K3sVmError('PORT_FORWARD_FAILED', `${podName} does not expose port ${port}; ${has}`, {
    hint: 'forward one of the ports its containers declare',
  });
}

function describeServicePort(p: V1ServicePort): string {
  return `${p.port} (${p.name ? `${p.name} ` : ''}→ ${p.targetPort ?? p.port})`;
}

/** The port of a Service a port refers to: its number, or its name. An error lists the ports it has. */
export function servicePortFor(service: V1Service, port: number | string): V1ServicePort {
  const ports = (service.spec?.ports ?? []).filter((p) => (p.protocol ?? 'TCP') === 'TCP');
  const found = ports.find((p) => (typeof port === 'number' ? p.port === port : p.name === port));
  if (found) return found;
  const name = `Service ${service.metadata?.namespace}/${service.metadata?.name}`;
  throw new K3sVmError(
    'PORT_FORWARD_FAILED',
    `${name} does not expose ${typeof port === 'number' ? 'port' : 'a port named'} ${port}; ${ports.length ? `it exposes ${ports.map(describeServicePort).join(', ')}` : 'it exposes no TCP ports'}`,
    { hint: 'forward one of the ports of the Service (its `port`, or the port’s name)' },
  );
}

interface EndpointSlice {
  readonly endpoints?: readonly {
    readonly conditions?: { readonly ready?: boolean | null };
    readonly targetRef?: { readonly kind?: string; readonly name?: string };
  }[];
}

/** The names of the ready Pods among a Service's EndpointSlices (ready unset counts as ready, as the API says). */
export function readyPodsOf(slices: readonly EndpointSlice[]): string[] {
  const names = slices.flatMap((slice) =>
    (slice.endpoints ?? [])
      .filter((e) => e.conditions?.ready !== false && e.targetRef?.kind === 'Pod' && e.targetRef.name)
      .map((e) => e.targetRef!.name!),
  );
  return [...new Set(names)].sort();
}

async function podBehindService(kubeConfig: KubeConfig, namespace: string, name: string): Promise<{ service: V1Service; pod: V1Pod }> {
  const { CoreV1Api, DiscoveryV1Api } = clientNode();
  const core = kubeConfig.makeApiClient(CoreV1Api);
  let service: V1Service;
  try {
    service = await core.readNamespacedService({ name, namespace });
  } catch (error) {
    if ((error as { code?: number }).code !== 404)
      throw new K3sVmError('KUBE_REQUEST_FAILED', `reading Service ${namespace}/${name} failed: ${apiErrorText(error)}`, { cause: error });
    const others = await core
      .listNamespacedService({ namespace, limit: 20 })
      .then((list) => list.items.map((s) => s.metadata?.name ?? '?'))
      .catch(() => undefined);
    const instead =
      others === undefined
        ? ''
        : others.length
          ? `; the namespace has the services ${others.join(', ')}`
          : '; the namespace has no services';
    throw new K3sVmError('OBJECT_NOT_FOUND', `Service ${namespace}/${name} does not exist${instead}`, { cause: error });
  }
  const slices = await kubeConfig
    .makeApiClient(DiscoveryV1Api)
    .listNamespacedEndpointSlice({ namespace, labelSelector: `kubernetes.io/service-name=${name}` });
  const ready = readyPodsOf(slices.items as EndpointSlice[]);
  if (ready.length === 0) {
    const selector = Object.entries(service.spec?.selector ?? {})
      .map(([key, value]) => `${key}=${value}`)
      .join(',');
    let behind = 'it has no selector, and no endpoints of its own';
    if (selector) {
      const pods = await core.listNamespacedPod({ namespace, labelSelector: selector }).catch(() => undefined);
      behind = !pods
        ? `its selector is ${selector}`
        : pods.items.length
          ? `its selector ${selector} matches ${pods.items.map((p) => `${p.metadata?.name} (${describeState(p as never)})`).join('; ')}`
          : `its selector ${selector} matches no pods`;
    }
    throw new K3sVmError('PORT_FORWARD_FAILED', `Service ${namespace}/${name} has no ready endpoints: ${behind}`, {
      hint: 'wait until a Pod behind it is Ready first (waitFor with podReady or deploymentAvailable)',
    });
  }
  return { service, pod: await readPod(kubeConfig, { name: ready[0]!, namespace }) };
}

/**
 * Forwards a local port on 127.0.0.1 to a port of a Pod, or of a Service (its target port,
 * named or numbered, on a ready Pod behind it), as `kubectl port-forward` does. Every
 * connection to the local port is one stream to the Pod, so one forward serves many requests.
 * A Pod or Service that does not exist, a port it does not expose, a Service without ready
 * endpoints, or a Pod that is not running is an error naming it and what it has instead.
 *
 * @example
 * const forward = await portForward(kubeConfig, { kind: 'Service', name: 'web', namespace }, 80);
 * const response = await forward.fetch('/');
 * await forward.close();
 */
export async function portForward(
  kubeConfig: KubeConfig,
  target: ObjectTarget,
  port: number | string,
  options: PortForwardOptions = {},
): Promise<PortForwardHandle> {
  const checked = checkTarget(target);
  if (checked.kind !== 'Pod' && checked.kind !== 'Service')
    throw new K3sVmError('TARGET_INVALID', `cannot forward a port of ${describeTarget(checked)}: only a Pod or a Service`, {
      hint: 'forward to the Service in front of it, or to one of its Pods',
    });
  if (!((typeof port === 'number' && Number.isInteger(port) && port > 0 && port < 65536) || (typeof port === 'string' && port !== '')))
    throw new K3sVmError(
      'TARGET_INVALID',
      `port ${JSON.stringify(port)} of ${describeTarget(checked)} is not a port number (1-65535) or a port name`,
    );
  throwIfAborted(options.signal);
  const namespace = checked.namespace!;
  let pod: V1Pod;
  let remotePort: number;
  if (checked.kind === 'Service') {
    const behind = await podBehindService(kubeConfig, namespace, checked.name);
    const servicePort = servicePortFor(behind.service, port);
    pod = behind.pod;
    const targetPort = (servicePort.targetPort as number | string | undefined) ?? servicePort.port;
    remotePort = typeof targetPort === 'string' && /^\d+$/.test(targetPort) ? Number(targetPort) : podPortFor(pod, targetPort);
  } else {
    pod = await readPod(kubeConfig, { name: checked.name, namespace });
    remotePort = podPortFor(pod, port);
  }
  const podName = pod.metadata!.name!;
  const through = checked.kind === 'Service' ? ` (behind Service ${namespace}/${checked.name})` : '';
  if (pod.status?.phase !== 'Running')
    throw new K3sVmError('PORT_FORWARD_FAILED', `Pod ${namespace}/${podName}${through} is not running: ${describeState(pod as never)}`, {
      hint: 'wait for it first: waitFor(kubeConfig, pod, podReady)',
    });
  throwIfAborted(options.signal);
  return openForward(kubeConfig, { name: podName, namespace }, remotePort, through, options);
}

async function openForward(
  kubeConfig: KubeConfig,
  pod: { name: string; namespace: string },
  remotePort: number,
  through: string,
  options: PortForwardOptions,
): Promise<PortForwardHandle> {
  const forwarder = new (clientNode().PortForward)(kubeConfig, true);
  const sockets = new Set<Socket>();
  let lastError: K3sVmError | undefined;
  let closed = false;
  const podName = `Pod ${pod.namespace}/${pod.name}${through}`;

  /** Why a connection failed, in terms of the Pod: gone, ended, or the forward's own message. */
  const explain = async (detail: string): Promise<K3sVmError> => {
    const state = await readPod(kubeConfig, pod).then(
      (found) => (found.status?.phase === 'Running' && !found.metadata?.deletionTimestamp ? undefined : describeState(found as never)),
      (error: unknown) => (error instanceof K3sVmError && error.code === 'OBJECT_NOT_FOUND' ? 'it no longer exists' : undefined),
    );
    const message = state
      ? `the port-forward to port ${remotePort} of ${podName} lost its Pod: ${state}`
      : `the port-forward to port ${remotePort} of ${podName} failed: ${detail}`;
    lastError = new K3sVmError('PORT_FORWARD_FAILED', message, {
      hint: state
        ? 'the forward does not follow a new Pod: open a new one once a Pod is ready'
        : 'is the container listening on that port?',
    });
    return lastError;
  };

  const onConnection = (socket: Socket) => {
    if (closed) return socket.destroy();
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let errorText = '';
    const errors = new Writable({
      write(chunk: Buffer, _encoding, done) {
        errorText += chunk.toString('utf8');
        done();
      },
    });
    forwarder.portForward(pod.namespace, pod.name, [remotePort], socket, errors, socket).then(
      (opened) => {
        const ws = opened as unknown as { on(event: string, listener: () => void): void; close(): void };
        socket.on('close', () => ws.close());
        ws.on('close', () => {
          if (errorText) {
            void explain(errorText.trim()).finally(() => socket.destroy());
          } else socket.end();
        });
      },
      (error: unknown) => {
        void explain(apiErrorText(error)).finally(() => socket.destroy());
      },
    );
  };

  const server: Server = createServer(onConnection);
  await new Promise<void>((resolve, reject) => {
    const onAbort = () => {
      server.close();
      reject(abortError(options.signal!));
    };
    options.signal?.addEventListener('abort', onAbort, { once: true });
    server.once('error', (error) => {
      options.signal?.removeEventListener('abort', onAbort);
      reject(
        new K3sVmError('PORT_FORWARD_FAILED', `cannot listen on 127.0.0.1:${options.localPort ?? 0}: ${error.message}`, { cause: error }),
      );
    });
    server.listen(options.localPort ?? 0, '127.0.0.1', () => {
      options.signal?.removeEventListener('abort', onAbort);
      resolve();
    });
  });
  // A forgotten forward must not keep the test process alive.
  server.unref();
  const address = server.address();
  const localPort = typeof address === 'object' && address ? address.port : 0;
  const url = `http://127.0.0.1:${localPort}`;

  const close = async () => {
    if (closed) return;
    closed = true;
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return {
    url,
    port: localPort,
    pod,
    remotePort,
    get error() {
      return lastError;
    },
    async fetch(path: string, init?: RequestInit) {
      if (closed) throw new K3sVmError('PORT_FORWARD_FAILED', `the port-forward ${url} to ${podName} is closed`);
      const before = lastError;
      try {
        return await fetch(new URL(path, url), init);
      } catch (error) {
        if ((error as Error).name === 'AbortError') throw error;
        // What the forward itself heard of this connection's failure, if anything, says more than the socket.
        const heard = lastError !== before ? lastError : undefined;
        throw await explain(
          heard?.message.replace(/^.*? failed: /, '') ?? (error as { cause?: Error }).cause?.message ?? (error as Error).message,
        );
      }
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
