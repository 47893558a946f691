// k3s-vm/jest/teardown: Jest globalTeardown. Releases the cluster (stopping it unless kept or still in use).
import { closeSession } from '../session.js';
import { clearHandoff } from './handoff.js';

export default async function globalTeardown(): Promise<void> {
  await closeSession();
  clearHandoff();
}
