// How Jest's global setup hands the cluster to its workers: an environment variable they inherit.
import { K3sVmError } from '../../errors.js';
import type { ProvidedCluster } from '../session.js';

/** Globals set in a Jest global setup do not reach the workers; the environment does (workers start after it). */
export const handoffVariable = 'K3S_VM_PROVIDED';

export function writeHandoff(provided: ProvidedCluster): void {
  process.env[handoffVariable] = JSON.stringify(provided);
}

export function clearHandoff(): void {
  delete process.env[handoffVariable];
}

/** The cluster handed to this worker process, if any. */
export function readHandoff(): ProvidedCluster | undefined {
  const text = process.env[handoffVariable];
  if (!text) return undefined;
  try {
    return JSON.parse(text) as ProvidedCluster;
  } catch {
    throw new K3sVmError('CONFIG_INVALID', `${handoffVariable} does not hold the JSON that k3s-vm's global setup writes`, {
      hint: `unset ${handoffVariable}; k3s-vm's global setup sets it for the test workers`,
    });
  }
}
