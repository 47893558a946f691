// The steps' API connection (src/kube/kube-http.ts) against a small HTTPS stand-in for the API
// server: requests share one keep-alive connection, also when they are made at the same moment.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiStatusError, KubeHttp, type ApiEndpoint } from '../../src/kube/kube-http.js';

const genCerts = fileURLToPath(new URL('../../fixtures/test-guest/fake-k3s-api/gen-certs.sh', import.meta.url));
const tls = join(mkdtempSync(join(tmpdir(), 'k3s-vm-kube-http-')), 'tls');
let server: Server;
let endpoint: ApiEndpoint;
let connections = 0;

beforeAll(async () => {
  const certs = spawnSync('/bin/sh', [genCerts, tls], { encoding: 'utf8' });
  if (certs.status !== 0) throw new Error(`gen-certs.sh failed: ${certs.stderr}`);
  const read = (name: string) => readFileSync(join(tls, name));
  server = createServer({ key: read('server.key'), cert: read('server.crt') }, (req, res) => {
    // A little later, so that requests made together are in flight together.
    setTimeout(() => {
      res.setHeader('content-type', 'application/json');
      if (req.url === '/readyz') return res.end('ok');
      if (req.url?.startsWith('/api/v1/nodes')) return res.end(JSON.stringify({ kind: 'NodeList', items: [] }));
      res.statusCode = 404;
      res.end(JSON.stringify({ kind: 'Status', code: 404, message: `${req.url} not found` }));
    }, 20);
  });
  server.on('secureConnection', () => connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  endpoint = {
    server: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    ca: read('ca.crt'),
    cert: read('client-admin.crt'),
    key: read('client-admin.key'),
    token: undefined,
    insecure: false,
  };
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

describe('the API connection of the readiness steps', () => {
  it('makes every request on one TLS connection, also four made at the same moment', async () => {
    connections = 0;
    const http = new KubeHttp(endpoint);
    try {
      expect(await http.readyz()).toBe(true);
      const together = await Promise.all([1, 2, 3, 4].map(() => http.getJson<{ items: unknown[] }>('/api/v1/nodes')));
      expect(together.map((list) => list.items)).toEqual([[], [], [], []]);
      expect(connections).toBe(1);
    } finally {
      http.close();
    }
  });

  it('throws an answer other than 2xx as ApiStatusError with the Status body', async () => {
    const http = new KubeHttp(endpoint);
    try {
      const error = await http.get('/api/v1/namespaces/gone').catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ApiStatusError);
      expect(error).toMatchObject({ code: 404, body: expect.stringContaining('/api/v1/namespaces/gone not found') });
    } finally {
      http.close();
    }
  });
});
