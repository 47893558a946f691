// The API contract (test/contract/kube-api-contract.ts) against the real API server of the
// real-Kubernetes test guest: the same tests the fake K3s API passes.
import { kubeApiContract } from '../contract/kube-api-contract.js';
import { describeReal, realKubeConfig } from '../support/real-cluster.js';

describeReal('the real API server keeps the contract k3s-vm relies on', () => {
  kubeApiContract(realKubeConfig, 120_000);
});
