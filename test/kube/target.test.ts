// Targets: checked before any request, with errors naming the target and the remedy; API paths.
import { describe, expect, it } from 'vitest';
import { checkTarget, collectionPath, describeTarget } from '../../src/kube/target.js';
import { K3sVmError } from '../../src/errors.js';

const refusal = (fn: () => unknown) => {
  try {
    fn();
  } catch (error) {
    return error as K3sVmError;
  }
  throw new Error('expected a refusal');
};

describe('checkTarget', () => {
  it('resolves a built-in kind without the cluster, matching its name regardless of case', () => {
    expect(checkTarget({ kind: 'deployment', name: 'web', namespace: 'ns' })).toMatchObject({
      kind: 'Deployment',
      apiVersion: 'apps/v1',
      plural: 'deployments',
      namespaced: true,
    });
  });

  it('refuses a namespaced kind without its namespace, and a cluster-scoped one with one', () => {
    const missing = refusal(() => checkTarget({ kind: 'Pod', name: 'web' }));
    expect(missing.code).toBe('TARGET_INVALID');
    expect(missing.message).toBe('the target {"kind":"Pod","name":"web"} has no namespace, and a Pod is namespaced');
    expect(missing.hint).toMatch(/namespace: '…'/);
    expect(refusal(() => checkTarget({ kind: 'Node', name: 'n1', namespace: 'x' })).message).toMatch(/a Node is cluster-scoped/);
  });

  it('asks for the apiVersion of a kind it does not know, listing the ones it knows', () => {
    const error = refusal(() => checkTarget({ kind: 'Widget', name: 'w', namespace: 'ns' }));
    expect(error.message).toMatch(/names a kind k3s-vm does not know without its apiVersion/);
    expect(error.hint).toMatch(/apiVersion: 'example.com\/v1'.*Pod, Service/);
    expect(checkTarget({ kind: 'Widget', apiVersion: 'example.com/v1', name: 'w', namespace: 'ns' }).plural).toBeUndefined();
  });

  it('refuses a target without a name or kind, or with a malformed apiVersion', () => {
    expect(refusal(() => checkTarget({ kind: 'Pod', name: '', namespace: 'ns' })).message).toMatch(/has no name/);
    expect(refusal(() => checkTarget({ name: 'x' } as never)).message).toMatch(/has no kind/);
    expect(refusal(() => checkTarget({ kind: 'Widget', apiVersion: 'example.com', name: 'w' })).message).toMatch(/apiVersion/);
  });
});

describe('paths and names', () => {
  it('puts the core group under /api and others under /apis, namespaced or not', () => {
    expect(collectionPath({ apiVersion: 'v1', plural: 'pods', namespaced: true, namespace: 'a b' })).toBe('/api/v1/namespaces/a%20b/pods');
    expect(collectionPath({ apiVersion: 'batch/v1', plural: 'jobs', namespaced: true, namespace: 'ns' })).toBe(
      '/apis/batch/v1/namespaces/ns/jobs',
    );
    expect(collectionPath({ apiVersion: 'v1', plural: 'nodes', namespaced: false, namespace: undefined })).toBe('/api/v1/nodes');
  });

  it('names a target as kind namespace/name', () => {
    expect(describeTarget({ kind: 'Pod', name: 'web', namespace: 'ns' })).toBe('Pod ns/web');
    expect(describeTarget({ kind: 'Node', name: 'n1' })).toBe('Node n1');
  });
});
