// Manifests: read and checked whole, server-side applied in order with CRDs waited for; against the fake K3s API test double on the host (no VM).
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AppsV1Api, CoreV1Api, CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeK3sApi, type FakeK3sApi } from '../../fixtures/test-guest/fake-k3s-api/server.mjs';
import { run } from '../../src/adapters/cli/run.js';
import { applyManifests } from '../../src/cluster/index.js';
import { checkWorkload, commandBatches } from '../../src/cluster/workload.js';
import { resolveConfig } from '../../src/config/resolve-config.js';
import { K3sVmError } from '../../src/errors.js';
import { applyManifestFile, expandManifestPaths, readManifestFile } from '../../src/kube/manifests.js';
import { memoryIo } from '../support/cli.js';
import { recordingLogger } from '../support/test-guest.js';

const genCerts = fileURLToPath(new URL('../../fixtures/test-guest/fake-k3s-api/gen-certs.sh', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'k3s-vm-workload-'));
let api: FakeK3sApi;
let kc: KubeConfig;
let kubeconfigFile: string;

const write = (name: string, text: string) => {
  const path = join(work, name);
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, text);
  return path;
};

const crd = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: { plural: widgets, singular: widget, kind: Widget }
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
`;

async function failure(promise: Promise<unknown>): Promise<K3sVmError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(K3sVmError);
  return error as K3sVmError;
}

beforeAll(async () => {
  const certs = spawnSync('/bin/sh', [genCerts, join(work, 'tls')], { encoding: 'utf8' });
  if (certs.status !== 0) throw new Error(`gen-certs.sh failed: ${certs.stderr}`);
  api = await startFakeK3sApi({
    tlsDir: join(work, 'tls'),
    host: '127.0.0.1',
    port: 0,
    nodeName: 'node',
    nodeReadyDelayMs: 0,
    serviceAccountDelayMs: 0,
    crdEstablishDelayMs: 300,
    deploymentRolloutDelayMs: 300,
    log: false,
  });
  kc = new KubeConfig();
  kc.loadFromString(api.kubeconfig);
  kubeconfigFile = write('kubeconfig', api.kubeconfig);
});

afterAll(async () => {
  await api?.close();
});

const deadline = () => Date.now() + 20_000;

describe('reading manifests', () => {
  it('splits multi-document YAML, skips empty documents, expands Lists', async () => {
    const path = write(
      'multi.yaml',
      `# leading comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: c}}\n---\n`,
    );
    const file = await readManifestFile(path);
    expect(file.documents.map((d) => [d.index, d.line, d.object.metadata?.name])).toEqual([
      [1, 3, 'a'],
      [2, 8, 'b'],
      [2, 8, 'c'],
    ]);
  });

  it('names the file, the document and the line of a YAML error', async () => {
    const path = write(
      'broken.yaml',
      'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n',
    );
    const error = await failure(readManifestFile(path));
    expect(error.code).toBe('WORKLOAD_INVALID');
    expect(error.message).toMatch(new RegExp(`^manifest ${path}, document 2 \\(line (8|9)\\): not valid YAML: `));
    expect(error.hint).toBe('fix the manifest; nothing from it was applied');
  });

  it('names an object without a kind or a name', async () => {
    const noKind = write('no-kind.yaml', 'apiVersion: v1\nmetadata: {name: x}\n');
    expect((await failure(readManifestFile(noKind))).message).toBe(`manifest ${noKind}, document 1 (line 1): it has no kind`);
    const noName = write('no-name.yaml', 'apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n');
    expect((await failure(readManifestFile(noName))).message).toBe(
      `manifest ${noName}, document 1 (line 1): the ConfigMap has no metadata.name (server-side apply needs one)`,
    );
  });

  it("takes a directory's manifest files sorted by name, and names a missing path", async () => {
    write('dir/b.yaml', 'x: 1\n');
    write('dir/a.yml', 'x: 1\n');
    write('dir/c.json', '{}');
    write('dir/notes.txt', 'not a manifest');
    expect(await expandManifestPaths([join(work, 'dir')])).toEqual(['a.yml', 'b.yaml', 'c.json'].map((name) => join(work, 'dir', name)));
    const error = await failure(expandManifestPaths([join(work, 'nowhere')]));
    expect(error.message).toBe(`manifest ${join(work, 'nowhere')} does not exist`);
    expect(error.hint).toBe('check the path; relative paths are relative to the project root');
  });
  it('names a missing image or manifest by the setting it came from, as the user wrote it', async () => {
    const project = mkdtempSync(join(tmpdir(), 'k3s-vm-workload-names-'));
    writeFileSync(join(project, 'package.json'), '{}');
    const hintFor = async (config: ReturnType<typeof resolveConfig>) => (await failure(checkWorkload(config))).hint;
    const byFlag = resolveConfig({}, {}, project, { manifests: 'gone.yaml' });
    expect(await hintFor(byFlag)).toBe('check --manifests; relative paths are relative to the project root');
    const byVariable = resolveConfig({}, { K3S_VM_IMAGES: 'gone.tar' }, project);
    expect(await hintFor(byVariable)).toBe('check K3S_VM_IMAGES; relative paths are relative to the project root');
    const inCode = resolveConfig({ images: ['gone.tar'] }, {}, project);
    expect(await hintFor(inCode)).toBe('check option images; relative paths are relative to the project root');
  });
  it("follows symbolic links in a directory, as kubectl does (Nix's linkFarm and symlinkJoin make such directories), and names a dangling one", async () => {
    const target = write('link-targets/config.yaml', 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: linked}\n');
    mkdirSync(join(work, 'farm'));
    symlinkSync(target, join(work, 'farm', 'a.yaml'));
    symlinkSync(join(work, 'link-targets'), join(work, 'farm', 'b.yaml'));
    write('farm/c.yaml', 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plain}\n');
    expect(await expandManifestPaths([join(work, 'farm')])).toEqual([join(work, 'farm', 'a.yaml'), join(work, 'farm', 'c.yaml')]);
    expect((await readManifestFile(join(work, 'farm', 'a.yaml'))).documents[0]?.object.metadata?.name).toBe('linked');

    symlinkSync(join(work, 'gone.yaml'), join(work, 'farm', 'd.yaml'));
    const error = await failure(expandManifestPaths([join(work, 'farm')]));
    expect(error.code).toBe('WORKLOAD_INVALID');
    expect(error.message).toBe(
      `manifest ${join(work, 'farm', 'd.yaml')} is a symbolic link to ${join(work, 'gone.yaml')}, which does not exist`,
    );
  });

  it('refuses an alias bomb while parsing, at once, naming the document', async () => {
    const levels = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]'];
    for (let i = 1; i < 9; i++) {
      const previous = String.fromCharCode(96 + i);
      const name = String.fromCharCode(97 + i);
      levels.push(`${name}: &${name} [${Array(9).fill(`*${previous}`).join(', ')}]`);
    }
    const path = write(
      'bomb.yaml',
      `apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\ndata:\n  ${levels.join('\n  ')}\n`,
    );
    const started = Date.now();
    const error = await failure(readManifestFile(path));
    expect(Date.now() - started).toBeLessThan(2000);
    expect(error.code).toBe('WORKLOAD_INVALID');
    expect(error.message).toBe(
      `manifest ${path}, document 2 (line 5): its aliases (*name) expand to more than 100 nodes, which is refused as a resource exhaustion attack (an alias bomb)`,
    );
    // A few aliases, as manifests use them, are fine.
    const few = write('anchors.yaml', 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: anchors, labels: &l {app: x}, annotations: *l}\n');
    expect((await readManifestFile(few)).documents[0]?.object.metadata?.annotations).toEqual({ app: 'x' });
  });
});

describe('applying manifests (fake K3s API)', () => {
  it('applies a CRD, waits until it is Established, then applies its custom resource from the same file', async () => {
    const path = write(
      'widgets.yaml',
      `apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: first, namespace: default}\nspec: {size: 3}\n---\n${crd}`,
    );
    const result = await applyManifestFile(kc, await readManifestFile(path), { deadline: deadline() });
    expect(result.objects).toEqual(['CustomResourceDefinition widgets.example.com', 'Widget default/first']);
    const widget = (await kc
      .makeApiClient(CustomObjectsApi)
      .getNamespacedCustomObject({ group: 'example.com', version: 'v1', namespace: 'default', plural: 'widgets', name: 'first' })) as {
      spec: unknown;
      metadata: { managedFields: Array<{ manager: string; operation: string }> };
    };
    expect(widget.spec).toEqual({ size: 3 });
    expect(widget.metadata.managedFields.map((f) => [f.manager, f.operation])).toEqual([['k3s-vm', 'Apply']]);
  });

  it('waits for a Deployment to roll out when asked', async () => {
    const path = write(
      'deploy.yaml',
      `apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: default}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: k3s-vm.test/web:1}]\n`,
    );
    await applyManifestFile(kc, await readManifestFile(path), { deadline: deadline(), waitForRollout: true });
    const deployment = await kc.makeApiClient(AppsV1Api).readNamespacedDeployment({ name: 'web', namespace: 'default' });
    expect(deployment.status?.availableReplicas).toBe(2);
  });

  it('reports a conflict with another field manager, naming the file, the document and what was applied before it', async () => {
    await kc
      .makeApiClient(CoreV1Api)
      .createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name: 'owned' }, data: { key: 'theirs' } } });
    const path = write(
      'conflict.yaml',
      'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fine, namespace: default}\ndata: {a: b}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: owned, namespace: default}\ndata: {key: ours}\n',
    );
    const error = await failure(applyManifestFile(kc, await readManifestFile(path), { deadline: deadline() }));
    expect(error.code).toBe('APPLY_FAILED');
    expect(error.message).toMatch(
      new RegExp(
        `^manifest ${path}, document 2 \\(line 6\\): applying ConfigMap default/owned failed: HTTP 409: Apply failed with 1 conflict`,
      ),
    );
    expect(error.details).toBe(`applied from ${path} before it: ConfigMap default/fine`);
    expect(error.hint).toMatch(/another field manager owns those fields/);
  });

  it('reports an object the API server rejects', async () => {
    const path = write(
      'invalid.yaml',
      'apiVersion: v1\nkind: Pod\nmetadata: {name: nothing-to-run, namespace: default}\nspec: {containers: []}\n',
    );
    const error = await failure(applyManifestFile(kc, await readManifestFile(path), { deadline: deadline() }));
    expect(error.message).toMatch(/document 1 \(line 1\): applying Pod default\/nothing-to-run failed: HTTP 422: /);
    expect(error.details).toBe(`nothing from ${path} was applied before it`);
  });
  it('says so when the namespace of an object does not exist (not that the kind is not served)', async () => {
    const path = write('elsewhere.yaml', 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lost, namespace: nowhere}\n');
    const error = await failure(applyManifestFile(kc, await readManifestFile(path), { deadline: deadline() }));
    expect(error.message).toMatch(/applying ConfigMap nowhere\/lost failed: HTTP 404: namespaces "nowhere" not found/);
    expect(error.hint).toBe(
      'namespace nowhere does not exist: apply its Namespace before it (in an earlier file, or earlier in this one), or fix metadata.namespace',
    );
    // A group the server does not serve at all (404 from discovery), and a kind missing from a served group (the CRD test's).
    for (const apiVersion of ['example.org/v1', 'example.com/v1']) {
      const unserved = write(
        `unserved-${apiVersion.replace('/', '-')}.yaml`,
        `apiVersion: ${apiVersion}\nkind: Gadget\nmetadata: {name: g, namespace: default}\n`,
      );
      const refused = await failure(applyManifestFile(kc, await readManifestFile(unserved), { deadline: deadline() }));
      expect(refused.hint, refused.message).toMatch(/does not serve this kind/);
    }
  });
});

describe('applying to an existing cluster (K3S_VM_KUBECONFIG)', () => {
  const options = () => ({ env: {}, kubeconfig: kubeconfigFile, allowContexts: ['*'], cwd: work, projectRoot: work });

  it('applies every file every time, in order, with a progress line per file', async () => {
    const first = write('existing/1-namespace.yaml', 'apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n');
    const second = write(
      'existing/2-config.yaml',
      'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: shop}\ndata: {currency: EUR}\n',
    );
    const logger = recordingLogger();
    const result = await applyManifests([join(work, 'existing')], { ...options(), logger });
    expect(result.manifests.map((m) => [m.path, m.applied, m.objects])).toEqual([
      [first, true, ['Namespace shop']],
      [second, true, ['ConfigMap shop/settings']],
    ]);
    expect(logger.lines).toEqual([
      expect.stringMatching(/^applied manifest existing\/1-namespace\.yaml \(1 object, \d+ B\) in \d+\.\d\d s$/),
      expect.stringMatching(/^applied manifest existing\/2-config\.yaml \(1 object, \d+ B\) in \d+\.\d\d s$/),
    ]);
    const again = await applyManifests([join(work, 'existing')], options());
    expect(again.manifests.every((m) => m.applied)).toBe(true);
  });

  it('k3s-vm apply does the same from the command line, and names a broken file with exit code 1', async () => {
    const io = memoryIo({ K3S_VM_KUBECONFIG: kubeconfigFile, K3S_VM_ALLOW_CONTEXTS: '*' }, work);
    const path = write('cli/config.yaml', 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-cli, namespace: default}\n');
    expect(await run(['apply', path], io)).toBe(0);
    expect(io.err()).toMatch(/applied manifest .*config\.yaml \(1 object, \d+ B\)/);
    const broken = write('cli/broken.yaml', 'kind: [\n');
    expect(await run(['apply', broken], io)).toBe(1);
    expect(io.err()).toContain(`error: manifest ${broken}, document 1 (line 2): not valid YAML`);
    expect(io.err()).toContain('hint: fix the manifest; nothing from it was applied');
    // A path given to the command is named as the path, not as the manifests setting.
    expect(await run(['apply', join(work, 'cli', 'gone.yaml')], io)).toBe(1);
    expect(io.err()).toContain('hint: check the path; relative paths are relative to the project root');
  });
});

describe('marker commands', () => {
  it('are joined into command lines short enough for the SSH server', () => {
    const commands = Array.from({ length: 40 }, (_, i) => `echo ${String(i).padStart(300, '0')}`);
    const batches = commandBatches(commands, 6000);
    expect(batches.length).toBe(3);
    expect(batches.every((batch) => batch.length <= 6000)).toBe(true);
    expect(batches.join(' && ')).toBe(commands.join(' && '));
    expect(commandBatches([])).toEqual([]);
    expect(commandBatches([], 6000, 'mkdir -p m')).toEqual([]);
    const prefixed = commandBatches(commands, 6000, 'mkdir -p m');
    expect(prefixed.every((batch) => batch.startsWith('mkdir -p m && echo ') && batch.length <= 6000)).toBe(true);
  });
});
