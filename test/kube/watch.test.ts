// List-then-watch of one object against a scripted source: resumes a dropped watch from the last
// version seen, lists again on 410 Gone, and ends at once on the signal.
import { describe, expect, it } from 'vitest';
import { followObject, type KubeObject, type ObjectSource, type WatchEvent } from '../../src/kube/watch.js';
import { isK3sVmError } from '../../src/errors.js';

const obj = (rv: string, phase: string): KubeObject => ({ metadata: { name: 'web', resourceVersion: rv }, status: { phase } });

/** A source whose lists and watches play back scripted steps, recording what was asked for. */
function scripted(lists: KubeObject[][], watches: ((emit: (e: WatchEvent) => void, end: (error?: unknown) => void) => void)[]) {
  const calls: string[] = [];
  let listIndex = 0;
  let watchIndex = 0;
  const source: ObjectSource = {
    async list() {
      const items = lists[Math.min(listIndex, lists.length - 1)]!;
      calls.push(`list ${listIndex++}`);
      return { items, resourceVersion: `L${listIndex}` };
    },
    async watch(resourceVersion, onEvent, onEnd) {
      calls.push(`watch from ${resourceVersion}`);
      const script = watches[watchIndex++];
      let aborted = false;
      queueMicrotask(() =>
        script?.(
          (e) => !aborted && onEvent(e),
          (error) => !aborted && onEnd(error),
        ),
      );
      return { abort: () => (aborted = true) };
    },
  };
  return { source, calls };
}

describe('followObject', () => {
  it('ends after the list when the object already satisfies the condition, without a watch', async () => {
    const { source, calls } = scripted([[obj('5', 'Running')]], []);
    await followObject(source, (o) => (o?.['status'] as { phase: string } | undefined)?.phase === 'Running', {
      signal: new AbortController().signal,
    });
    expect(calls).toEqual(['list 0']);
  });

  it('watches from the list’s resourceVersion and resumes a dropped watch from the last version it saw', async () => {
    const { source, calls } = scripted(
      [[obj('5', 'Pending')]],
      [
        (emit, end) => {
          emit({ type: 'MODIFIED', object: obj('7', 'Pending') });
          end(new Error('socket hang up'));
        },
        (emit, end) => {
          emit({ type: 'BOOKMARK', object: { metadata: { resourceVersion: '9' } } });
          end();
        },
        (emit) => emit({ type: 'MODIFIED', object: obj('12', 'Running') }),
      ],
    );
    const seen: string[] = [];
    await followObject(
      source,
      (o) => {
        seen.push(String((o?.['status'] as { phase?: string } | undefined)?.phase));
        return seen.at(-1) === 'Running';
      },
      { signal: new AbortController().signal, retryDelayMs: 1 },
    );
    expect(calls).toEqual(['list 0', 'watch from L1', 'watch from 7', 'watch from 9']);
    expect(seen).toEqual(['Pending', 'Pending', 'Running']);
  });

  it('lists again when the server says the version is gone (410), as an event or as the watch’s status', async () => {
    const { source, calls } = scripted(
      [[obj('5', 'Pending')], [obj('20', 'Pending')], [obj('30', 'Running')]],
      [
        (emit) => emit({ type: 'ERROR', object: { code: 410, message: 'too old resource version: 5 (19)' } }),
        (_emit, end) => end(Object.assign(new Error('Gone'), { statusCode: 410 })),
      ],
    );
    await followObject(source, (o) => (o?.['status'] as { phase?: string } | undefined)?.phase === 'Running', {
      signal: new AbortController().signal,
      retryDelayMs: 1,
    });
    expect(calls).toEqual(['list 0', 'watch from L1', 'list 1', 'watch from L2', 'list 2']);
  });

  it('sees a deletion as the object being absent', async () => {
    const { source } = scripted([[obj('5', 'Running')]], [(emit) => emit({ type: 'DELETED', object: obj('6', 'Running') })]);
    const seen: (KubeObject | undefined)[] = [];
    await followObject(source, (o) => (seen.push(o), o === undefined), { signal: new AbortController().signal });
    expect(seen.map((o) => o?.metadata?.resourceVersion)).toEqual(['5', undefined]);
  });

  it('ends at once with the signal’s reason while a watch is open', async () => {
    const { source } = scripted([[obj('5', 'Pending')]], [() => undefined]);
    const controller = new AbortController();
    const following = followObject(source, () => false, { signal: controller.signal });
    setTimeout(() => controller.abort(new Error('test timed out')), 20);
    const started = Date.now();
    const error = await following.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isK3sVmError(error, 'ABORTED')).toBe(true);
    expect(Date.now() - started).toBeLessThan(500);
  });

  it('gives up on a list error the caller calls final, and retries any other', async () => {
    let lists = 0;
    const source: ObjectSource = {
      async list() {
        lists++;
        if (lists === 1) throw new Error('ECONNRESET');
        throw Object.assign(new Error('Forbidden'), { code: 403 });
      },
      watch: async () => ({ abort() {} }),
    };
    const error = await followObject(source, () => false, {
      signal: new AbortController().signal,
      retryDelayMs: 1,
      isFatal: (e) => (e as { code?: number }).code === 403,
    }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(error?.message).toBe('Forbidden');
    expect(lists).toBe(2);
  });
});
