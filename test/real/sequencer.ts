// The order of the real-Kubernetes test files: the usual one, except that the snapshot file,
// which stops the shared guest and restores it from its snapshot, runs after every other.
import { BaseSequencer, type TestSpecification } from 'vitest/node';

export class LastIsRestore extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const isRestore = (file: TestSpecification) => file.moduleId.endsWith('/test/real/snapshot.test.ts');
    return [...sorted.filter((file) => !isRestore(file)), ...sorted.filter(isRestore)];
  }
}
