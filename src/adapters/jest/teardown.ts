// k3s-vm/jest/teardown: Jest globalTeardown. Releases the cluster (stopping it unless kept or still in use).
import { handoffVariable } from '../../config/resolve-config.js';
import { closeSession } from '../session.js';

export default async function globalTeardown(): Promise<void> {
  await closeSession();
  delete process.env[handoffVariable];
}
