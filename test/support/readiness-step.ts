// One readiness step checked on its own, outside the engine: the context the test gives, with
// the engine's clean-up (the step's API connection is closed when the check ends).
import type { ReadinessContext, ReadinessStep } from '../../src/readiness/engine.js';

export async function checkStep(step: ReadinessStep, context: Partial<ReadinessContext>): Promise<void> {
  const cleanUps: Array<() => void> = [];
  try {
    await step.check({
      signal: new AbortController().signal,
      ...context,
      onEnd: (cleanUp: () => void) => cleanUps.push(cleanUp),
    } as unknown as ReadinessContext);
  } finally {
    for (const cleanUp of cleanUps) cleanUp();
  }
}
