// The stage runner the boot is made of: order, skipped stages, and the one clean-up-then-rethrow.
import { describe, expect, it } from 'vitest';
import { runStages, type Stage } from '../../src/cluster/stages.js';
import { recordingLogger } from '../support/test-guest.js';

/** A stage that records its run, and what it registered, into the shared list. */
function stage(name: string, body: (done: string[]) => Promise<void> = async () => undefined): Stage<string[]> {
  return {
    name,
    run: async (done, scope) => {
      done.push(`run ${name}`);
      scope.onFailure(async () => {
        done.push(`undo ${name}`);
      });
      scope.onEnd(() => done.push(`end ${name}`));
      await body(done);
    },
  };
}

describe('running stages', () => {
  it('runs them in order, skips those whose condition is false, and ends each after the last', async () => {
    const done: string[] = [];
    await runStages([stage('a'), { ...stage('b'), when: () => false }, stage('c')], done, recordingLogger());
    expect(done).toEqual(['run a', 'run c', 'end c', 'end a']);
  });

  it('undoes what the stages before a failure registered, newest first, then rethrows the failure itself', async () => {
    const done: string[] = [];
    const failure = new Error('readiness deadline passed');
    const error = await runStages(
      [
        stage('launch'),
        stage('clock'),
        stage('readiness', () => Promise.reject(failure)),
        stage('never', () => Promise.reject(new Error('ran after the failure'))),
      ],
      done,
      recordingLogger(),
    ).catch((e: unknown) => e);
    expect(error).toBe(failure);
    expect(done).toEqual([
      'run launch',
      'run clock',
      'run readiness',
      'undo readiness',
      'undo clock',
      'undo launch',
      'end readiness',
      'end clock',
      'end launch',
    ]);
  });

  it('goes on undoing when one undo fails, warns with the stage that failed, and keeps the original error', async () => {
    const done: string[] = [];
    const logger = recordingLogger();
    const failing: Stage<string[]> = {
      name: 'launch',
      run: async (_, scope) => scope.onFailure(() => Promise.reject(new Error('QEMU would not stop'))),
    };
    const error = await runStages(
      [stage('ports'), failing, stage('save', () => Promise.reject(new Error('disk full')))],
      done,
      logger,
    ).catch((e: unknown) => e);
    expect((error as Error).message).toBe('disk full');
    expect(done).toContain('undo ports');
    expect(logger.lines).toContain('warning: cleaning up after the failed stage "save" also failed: QEMU would not stop');
  });
});
