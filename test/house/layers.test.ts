// The layer order of src/ is enforced by the linter: an import out of order fails `npm test`.
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../support/test-guest.js';

const eslint = new ESLint({ cwd: repoRoot });

async function problemsOf(file: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath: `${repoRoot}/${file}` });
  return (result?.messages ?? []).filter((m) => m.ruleId === 'no-restricted-imports').map((m) => m.message);
}

describe('the layer order', () => {
  it('refuses an import of a higher layer', async () => {
    const problems = await problemsOf('src/guest/example.ts', "import { startCluster } from '../cluster/index.js';\nvoid startCluster;\n");
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/src\/guest is below kube, readiness, cluster, adapters/);
  });

  it('keeps the Kubernetes layer below the cluster API, and adapters out of it', async () => {
    const up = await problemsOf('src/kube/example.ts', "import { startCluster } from '../cluster/index.js';\nvoid startCluster;\n");
    expect(up).toEqual([expect.stringMatching(/src\/kube is below readiness, cluster, adapters/)]);
    // The guest is the VM's shell only: the Kubernetes API is kube's, and readiness sits above both.
    const guestToKube = await problemsOf(
      'src/guest/example.ts',
      "import { loadKubeConfig } from '../kube/kubeconfig.js';\nvoid loadKubeConfig;\n",
    );
    expect(guestToKube).toEqual([expect.stringMatching(/src\/guest is below kube/)]);
    const kubeToReadiness = await problemsOf(
      'src/kube/example.ts',
      "import { k3sReadinessSteps } from '../readiness/readiness.js';\nvoid k3sReadinessSteps;\n",
    );
    expect(kubeToReadiness).toEqual([expect.stringMatching(/src\/kube is below readiness/)]);
    expect(
      await problemsOf(
        'src/readiness/example.ts',
        "import { GuestSsh } from '../guest/ssh.js';\nimport { KubeHttp } from '../kube/kube-http.js';\nvoid GuestSsh;\nvoid KubeHttp;\n",
      ),
    ).toEqual([]);
    const reaching = await problemsOf(
      'src/adapters/vitest/example.ts',
      "import { waitFor } from '../../kube/wait-for.js';\nvoid waitFor;\n",
    );
    expect(reaching).toEqual([expect.stringMatching(/adapters use only the cluster API/)]);
  });

  it('allows an import of a lower layer', async () => {
    expect(await problemsOf('src/guest/example.ts', "import { files } from '../state/files.js';\nvoid files;\n")).toEqual([]);
  });

  it('lets adapters use the cluster API, errors and logging only', async () => {
    const allowed =
      "import { startCluster } from '../../cluster/index.js';\nimport { K3sVmError } from '../../errors.js';\nvoid startCluster;\nvoid K3sVmError;\n";
    expect(await problemsOf('src/adapters/cli/example.ts', allowed)).toEqual([]);
    const reaching =
      "import { stopInstance } from '../../cluster/stop.js';\nimport { files } from '../../state/files.js';\nvoid stopInstance;\nvoid files;\n";
    const problems = await problemsOf('src/adapters/cli/example.ts', reaching);
    expect(problems).toHaveLength(2);
    expect(problems.every((p) => /adapters use only the cluster API/.test(p))).toBe(true);
  });
});

describe("the owner of the VM's life", () => {
  const sources = (readdirSync(join(repoRoot, 'src'), { recursive: true }) as string[])
    .filter((name) => name.endsWith('.ts'))
    .map((name) => join(repoRoot, 'src', name));

  it('signals processes only from src/qemu (a liveness probe, signal 0, and the process itself excepted)', () => {
    const signalling = sources.flatMap((file) =>
      readFileSync(file, 'utf8')
        .split('\n')
        .filter((line) => /process\.kill\(/.test(line) && !/process\.kill\([^,]+, 0\)|process\.kill\(process\.pid,/.test(line))
        .map((line) => `${relative(repoRoot, file)}: ${line.trim()}`),
    );
    expect(signalling.length).toBeGreaterThan(0);
    expect(signalling.filter((entry) => !entry.startsWith('src/qemu/'))).toEqual([]);
  });

  it('registers exit work only through src/at-exit.ts', () => {
    const listeners = sources
      .filter((file) => /process\.(on|once)\('exit'/.test(readFileSync(file, 'utf8')))
      .map((file) => relative(repoRoot, file));
    expect(listeners).toEqual(['src/at-exit.ts']);
  });
});
