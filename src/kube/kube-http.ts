// The few API reads that readiness and attach make, over one keep-alive HTTPS connection.
// client-node opens a new TLS connection for every request, and a TLS handshake with an
// emulated guest costs a good part of the time readiness may add; its import alone costs more
// than an attach. Users that authenticate with exec plugins or auth providers are left to it.
import { readFileSync } from 'node:fs';
import https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';

/** Where and how to reach an API server with a certificate or a token. */
export interface ApiEndpoint {
  readonly server: string;
  readonly ca?: Buffer | undefined;
  readonly cert?: Buffer | undefined;
  readonly key?: Buffer | undefined;
  readonly token?: string | undefined;
  readonly insecure?: boolean | undefined;
}

/** An API answer other than 2xx; `code` and `body` are what apiErrorText reads. */
export class ApiStatusError extends Error {
  constructor(
    readonly code: number,
    readonly body: string,
  ) {
    super(`HTTP ${code}`);
  }
}

/** Whether the API server refused the credentials (401: not authenticated; 403: not allowed to read /readyz). */
export function isCredentialRefusal(error: unknown): error is ApiStatusError {
  return error instanceof ApiStatusError && (error.code === 401 || error.code === 403);
}

function material(data: string | undefined, file: string | undefined): Buffer | undefined {
  if (data) return Buffer.from(data, 'base64');
  return file ? readFileSync(file) : undefined;
}

/** The current context's endpoint, or undefined when its user needs client-node (exec plugin, auth provider). */
export function endpointOf(kubeConfig: KubeConfig): ApiEndpoint | undefined {
  const cluster = kubeConfig.getCurrentCluster();
  const user = kubeConfig.getCurrentUser();
  if (!cluster || !user || user.exec || user.authProvider || user.username) return undefined;
  const cert = material(user.certData, user.certFile);
  const key = material(user.keyData, user.keyFile);
  if (!(cert && key) && !user.token) return undefined;
  return {
    server: cluster.server,
    ca: material(cluster.caData, cluster.caFile),
    cert,
    key,
    // A token read from a file (tokenFile) ends in a newline, which is not valid in a header.
    token: user.token?.trim(),
    insecure: cluster.skipTLSVerify,
  };
}

interface KubeconfigJson {
  readonly 'current-context'?: string;
  readonly contexts?: ReadonlyArray<{ readonly name?: string; readonly context?: { readonly cluster?: string; readonly user?: string } }>;
  readonly clusters?: ReadonlyArray<{ readonly name?: string; readonly cluster?: Record<string, unknown> }>;
  readonly users?: ReadonlyArray<{ readonly name?: string; readonly user?: Record<string, unknown> }>;
}

/**
 * The endpoint of a kubeconfig k3s-vm wrote (JSON, certificates inline), read without
 * client-node; undefined when the text is not such a kubeconfig (damaged, or YAML).
 */
export function endpointOfJson(text: string): ApiEndpoint | undefined {
  let config: KubeconfigJson;
  try {
    config = JSON.parse(text) as KubeconfigJson;
  } catch {
    return undefined;
  }
  const context = config.contexts?.find((c) => c.name === config['current-context'])?.context;
  const cluster = config.clusters?.find((c) => c.name === context?.cluster)?.cluster;
  const user = config.users?.find((u) => u.name === context?.user)?.user;
  const text64 = (value: unknown) => (typeof value === 'string' && value ? Buffer.from(value, 'base64') : undefined);
  const server = cluster?.['server'];
  const cert = text64(user?.['client-certificate-data']);
  const key = text64(user?.['client-key-data']);
  if (typeof server !== 'string' || !cert || !key) return undefined;
  return {
    server,
    ca: text64(cluster?.['certificate-authority-data']),
    cert,
    key,
    insecure: cluster?.['insecure-skip-tls-verify'] === true,
  };
}

type Query = Readonly<Record<string, string | number | boolean | undefined>>;

/** A watch in progress; abort() ends it. */
export interface WatchHandle {
  abort(): void;
}

/** One keep-alive connection (a few for watches) to an API server. close() when done. */
export class KubeHttp {
  readonly #endpoint: ApiEndpoint;
  readonly #agent: https.Agent;
  /**
   * Watches get connections of their own: a watch ends by closing its connection, and the
   * request that follows it should find the requests' connection still open.
   */
  readonly #watchAgent: https.Agent;

  constructor(endpoint: ApiEndpoint) {
    this.#endpoint = endpoint;
    const tls = { ca: endpoint.ca, cert: endpoint.cert, key: endpoint.key, rejectUnauthorized: !endpoint.insecure };
    // One connection for every request, the readiness steps that run ahead included: requests
    // at the same moment wait for it rather than open a second one. Right after a rewind a
    // second TLS connection into the emulated guest took about 0.8 s, in half the rewinds on the
    // test guest (a rewind to ready 1.6-1.8 s instead of 0.8-1.1 s; docs/snapshots.md).
    this.#agent = new https.Agent({ keepAlive: true, maxSockets: 1, ...tls });
    this.#watchAgent = new https.Agent({ keepAlive: false, ...tls });
  }

  #request(
    path: string,
    query: Query | undefined,
    signal: AbortSignal | undefined,
    agent = this.#agent,
  ): Promise<import('node:http').IncomingMessage> {
    const url = new URL(path, this.#endpoint.server);
    for (const [name, value] of Object.entries(query ?? {})) if (value !== undefined) url.searchParams.set(name, String(value));
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (this.#endpoint.token) headers['Authorization'] = `Bearer ${this.#endpoint.token}`;
    return new Promise((resolve, reject) => {
      const request = https.get(url, { agent, headers, signal }, resolve);
      request.once('error', reject);
    });
  }

  /** GETs a path; the body as text, or ApiStatusError for an answer other than 2xx. */
  async get(path: string, query?: Query, signal?: AbortSignal): Promise<string> {
    const response = await this.#request(path, query, signal);
    response.setEncoding('utf8');
    let body = '';
    for await (const chunk of response) body += chunk as string;
    const status = response.statusCode ?? 0;
    if (status < 200 || status > 299) throw new ApiStatusError(status, body);
    return body;
  }

  async getJson<T>(path: string, query?: Query, signal?: AbortSignal): Promise<T> {
    return JSON.parse(await this.get(path, query, signal)) as T;
  }

  /** Whether /readyz answers ok; a refusal of the credentials (401, 403) is thrown as the ApiStatusError it is. */
  async readyz(signal?: AbortSignal): Promise<boolean> {
    try {
      return (await this.get('/readyz', undefined, signal)).trim() === 'ok';
    } catch (error) {
      if (error instanceof ApiStatusError && !isCredentialRefusal(error)) return false;
      throw error;
    }
  }

  /**
   * Watches a collection: each event (type and object) as it arrives, then onDone once the
   * watch ends (with the error, if it failed). Resolves once the server has answered.
   */
  async watch(
    path: string,
    query: Query,
    onEvent: (type: string, object: unknown) => void,
    onDone: (error?: unknown) => void,
  ): Promise<WatchHandle> {
    const controller = new AbortController();
    const response = await this.#request(path, { ...query, watch: true }, controller.signal, this.#watchAgent);
    if ((response.statusCode ?? 0) !== 200) {
      response.resume();
      throw new ApiStatusError(response.statusCode ?? 0, `the watch of ${path} was refused`);
    }
    response.setEncoding('utf8');
    let pending = '';
    response.on('data', (chunk: string) => {
      pending += chunk;
      let newline: number;
      while ((newline = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, newline).trim();
        pending = pending.slice(newline + 1);
        if (!line) continue;
        try {
          const event = JSON.parse(line) as { type?: string; object?: unknown };
          onEvent(event.type ?? '', event.object);
        } catch (error) {
          controller.abort();
          onDone(error);
          return;
        }
      }
    });
    response.once('end', () => onDone());
    response.once('error', (error) => onDone(controller.signal.aborted ? undefined : error));
    return { abort: () => controller.abort() };
  }

  close(): void {
    this.#agent.destroy();
    this.#watchAgent.destroy();
  }
}
