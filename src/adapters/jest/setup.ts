// k3s-vm/jest/setup: Jest globalSetup. Starts or attaches to the cluster and hands it to the workers.
import type { StartOptions } from '../../cluster/cluster.js';
import { handoffVariable } from '../../config/resolve-config.js';
import { openSession } from '../session.js';

/** A Jest globalSetup with options from code: `export default createGlobalSetup({ memoryMiB: 2048 })`. */
export function createGlobalSetup(options: StartOptions = {}) {
  return async function globalSetup(): Promise<void> {
    const session = await openSession(options);
    // Globals set here do not reach Jest's workers; the environment does (workers start after this).
    process.env[handoffVariable] = JSON.stringify(session.provided);
  };
}

export default createGlobalSetup();
