import { describe, expect, it } from 'vitest';
import { rewriteKubeconfig } from '../../src/kube/kubeconfig.js';

// The shape K3s writes to /etc/rancher/k3s/k3s.yaml (certificates shortened).
const k3sYaml = `apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0EgREFUQQ==
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
`;

describe('rewriteKubeconfig', () => {
  it('points the cluster at the forwarded port and keeps the credentials', () => {
    const { kubeconfig, apiServerUrl } = rewriteKubeconfig(k3sYaml, 41234);
    expect(apiServerUrl).toBe('https://127.0.0.1:41234');
    const parsed = JSON.parse(kubeconfig);
    expect(parsed.clusters[0].cluster).toMatchObject({ server: 'https://127.0.0.1:41234', 'certificate-authority-data': 'Q0EgREFUQQ==' });
    expect(parsed.users[0].user).toMatchObject({ 'client-certificate-data': 'Q0VSVA==', 'client-key-data': 'S0VZ' });
    expect(parsed['current-context']).toBe('default');
  });

  it('renames the default context after the instance, so it does not clash in a merged kubeconfig', () => {
    const parsed = JSON.parse(rewriteKubeconfig(k3sYaml, 41234, 'my-vm').kubeconfig);
    expect(parsed['current-context']).toBe('my-vm');
    expect(parsed.contexts[0]).toMatchObject({ name: 'my-vm', context: { cluster: 'my-vm', user: 'my-vm' } });
  });

  it('parses rather than edits text: a server written in flow style is rewritten too', () => {
    const flow = k3sYaml
      .replace('    server: https://127.0.0.1:6443\n', '')
      .replace(
        '    certificate-authority-data: Q0EgREFUQQ==',
        '    {certificate-authority-data: Q0EgREFUQQ==, server: "https://127.0.0.1:6443"}',
      )
      .replace('- cluster:\n    {', '- cluster: {')
      .replace('}\n  name: default\ncontexts', '}\n  name: default\ncontexts');
    expect(JSON.parse(rewriteKubeconfig(flow, 5000).kubeconfig).clusters[0].cluster.server).toBe('https://127.0.0.1:5000');
  });

  it('refuses a kubeconfig without a cluster', () => {
    expect(() => rewriteKubeconfig('apiVersion: v1\nkind: Config\nclusters: []\nusers: []\ncontexts: []\n', 1)).toThrow(
      /has no cluster or no user/,
    );
  });
});
