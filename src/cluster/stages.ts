// Stages: a boot as a list of named steps over one context, run in order (the way kind runs its
// create actions). A stage that starts something registers how to undo it; when any later
// stage fails, the runner alone undoes, newest first, and rethrows the stage's own error, so
// that a stage added to the list cannot leak what an earlier one started.
import type { Logger } from '../log.js';

/** What a stage may register with the runner. */
export interface StageScope {
  /** Work for when this or a later stage fails: stopping the VM a stage launched. */
  onFailure(undo: () => Promise<void>): void;
  /** Work for when the stages end, failed or not: cancelling exit work they no longer need. */
  onEnd(done: () => void): void;
}

export interface Stage<C> {
  readonly name: string;
  /** Whether the stage runs for this context (the clock is set only after a restore). @default always */
  readonly when?: (context: C) => boolean;
  run(context: C, scope: StageScope): Promise<void>;
}

/**
 * Runs the stages in order. On a failure, the undo work registered so far runs, newest first;
 * an undo that fails too is logged as a warning, and the stage's own error is rethrown.
 */
export async function runStages<C>(stages: readonly Stage<C>[], context: C, logger: Logger): Promise<void> {
  const undos: Array<() => Promise<void>> = [];
  const ends: Array<() => void> = [];
  const scope: StageScope = { onFailure: (undo) => undos.push(undo), onEnd: (done) => ends.push(done) };
  let current: string | undefined;
  try {
    for (const stage of stages) {
      if (stage.when && !stage.when(context)) continue;
      current = stage.name;
      logger.debug(`stage: ${stage.name}`);
      await stage.run(context, scope);
    }
  } catch (error) {
    for (const undo of undos.reverse()) {
      try {
        await undo();
      } catch (undoError) {
        logger.warn(`cleaning up after the failed stage "${current ?? ''}" also failed: ${(undoError as Error).message}`);
      }
    }
    throw error;
  } finally {
    for (const done of ends.reverse()) done();
  }
}
