// k3s-vm/jest/setup: Jest globalSetup. Starts or attaches to the cluster and hands it to the workers.
import type { StartOptions } from '../../cluster/index.js';
import { openSession } from '../session.js';
import { writeHandoff } from './handoff.js';

/** A Jest globalSetup with options from code: `export default createGlobalSetup({ memoryMiB: 2048 })`. */
export function createGlobalSetup(options: StartOptions = {}) {
  return async function globalSetup(): Promise<void> {
    const session = await openSession(options);
    writeHandoff(session.provided);
  };
}

export default createGlobalSetup();
