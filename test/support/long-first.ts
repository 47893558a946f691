// The fast suite's order: its longest files first, whatever Vitest knows of earlier runs. Without a
// results cache (a fresh clone, as CI has) Vitest orders by file size, which would start the
// readiness deadline test, small but 40 s long, last and add its length to the run.
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/** Longest first, as measured in whole runs (seconds): each waits, boots or runs consumer projects. */
const longest = [
  'test/cluster/lifecycle.test.ts', // 65
  'test/adapters/vitest-consumer.test.ts', // 58
  'test/cluster/snapshot.test.ts', // 42
  'test/readiness/readiness-vm.test.ts', // 40: a deadline that must pass
  'test/adapters/jest-consumer.test.ts', // 33
  'test/cluster/snapshot-save-faults.test.ts', // 31
  'test/cluster/snapshot-workload.test.ts', // 29
  'test/adapters/cli.test.ts', // 28
  'test/cluster/rewind.test.ts', // 26
  'test/cluster/workload-vm.test.ts', // 20
  'test/adapters/vitest-rewind.test.ts', // 19
];

export class LongestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const rank = (file: TestSpecification) => {
      const index = longest.findIndex((path) => file.moduleId.endsWith(`/${path}`));
      return index === -1 ? longest.length : index;
    };
    // Array.prototype.sort is stable: the rest keep Vitest's order.
    return sorted.sort((a, b) => rank(a) - rank(b));
  }
}
