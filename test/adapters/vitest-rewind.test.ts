// K3S_VM_REWIND=file in a consumer project run by the real vitest: a rewind before each test file, and the refusal of parallel files.
import { beforeAll, describe, expect, it } from 'vitest';
import { consumerVitestProject as project, linkPackage, qemuProcessesUsing, runIn } from '../support/consumer.js';
import { consumerSnapshotDir, snapshotConsumerEnv } from '../support/consumer-snapshot.js';
import { useStateDirs } from '../support/state-dirs.js';

const dirs = useStateDirs();
beforeAll(() => linkPackage(project));

describe('a Vitest project with K3S_VM_REWIND=file', () => {
  it('is refused before anything boots when test files run in parallel, and otherwise rewinds before each file (neither file sees what the other left)', async () => {
    // The run restores the suite's snapshot of the consumers' VM (consumer-snapshot.ts) and rewinds to it.
    const dir = dirs.add(consumerSnapshotDir('vitest-rewind'));
    const env = snapshotConsumerEnv(dir, { K3S_VM_REWIND: 'file' });
    const parallel = await runIn(
      project,
      'vitest',
      ['run', '--config', 'vitest.rewind.config.ts', '--file-parallelism', '--maxWorkers=2'],
      env,
    );
    expect(parallel.exitCode).not.toBe(0);
    expect(parallel.all).toContain(
      "rewind 'file' (K3S_VM_REWIND) needs the test files to run one at a time, and Vitest runs up to 2 at once",
    );
    expect(parallel.all).not.toMatch(/(booting|restoring the saved) consumer/);

    const noSnapshot = await runIn(project, 'vitest', ['run', '--config', 'vitest.rewind.config.ts'], { ...env, K3S_VM_SNAPSHOT: '0' });
    expect(noSnapshot.exitCode).not.toBe(0);
    expect(noSnapshot.all).toContain('K3S_VM_REWIND=file rewinds the VM to its snapshot, but snapshots are off');

    const rewound = await runIn(project, 'vitest', ['run', '--config', 'vitest.rewind.config.ts'], env);
    expect(rewound.exitCode, rewound.all).toBe(0);
    expect(rewound.all).toMatch(/Tests\s+2 passed \(2\)/);
    expect(rewound.all).toMatch(/restoring the saved consumer/);
    expect(qemuProcessesUsing(dir)).toEqual([]);
  });
});
