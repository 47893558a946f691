// The public API is what a user needs, and each of its names is documented: adding or removing
// one is a deliberate change of this list and of the docs.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../support/test-guest.js';

const packageJson = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as {
  exports: Record<string, string | { default: string }>;
};

/** The test helpers the library and both test adapters export, written once (src/adapters/helper-exports.ts). */
const helpers = [
  'deleted',
  'deploymentAvailable',
  'execInPod',
  'exists',
  'jobComplete',
  'jobFailed',
  'podLogs',
  'podReady',
  'podRunning',
  'podSucceeded',
  'portForward',
  'waitFor',
];

/** Each entry's runtime exports. */
const expected: Record<string, string[]> = {
  '.': [
    ...helpers,
    'K3sVmError',
    'apiDiscoveryComplete',
    'apiReadyz',
    'applyManifests',
    'buildCluster',
    'clusterStatus',
    'collectDiagnostics',
    'contextAllowed',
    'createStreamLogger',
    'defaultServiceAccount',
    'deleteClusterSnapshot',
    'deleteNamedSnapshot',
    'diagnose',
    'importImages',
    'isK3sVmError',
    'k3sReadinessSteps',
    'k3sServiceActive',
    'kubeconfigPresent',
    'listSnapshots',
    'loadKubeConfig',
    'loadWorkload',
    'nodeReady',
    'openCluster',
    'probeKvm',
    'resetCluster',
    'resolveConfig',
    'rewind',
    'saveNamedSnapshot',
    'silentLogger',
    'sshAnswers',
    'startCluster',
    'stopCluster',
    'sweepDeadRuns',
  ],
  './vitest': [...helpers, 'createGlobalSetup', 'createTest', 'default', 'it', 'rewind', 'test', 'useK3sVm', 'useKubeConfig'],
  './jest': [...helpers, 'createTestNamespace', 'rewind', 'useK3sVm', 'useKubeConfig'],
  './jest/setup': ['createGlobalSetup', 'default'],
  './jest/teardown': ['default'],
  './jest/environment': ['default'],
};

/** The source file behind a package entry (./dist/x.js is built from src/x.ts). */
function sourceOf(entry: string | { default: string }): string {
  const built = typeof entry === 'string' ? entry : entry.default;
  return join(repoRoot, built.replace(/^\.\/dist\//, 'src/').replace(/\.js$/, '.ts'));
}

describe('the public API', () => {
  const entries = Object.entries(packageJson.exports).filter(([name]) => name !== './package.json');

  it('has the entries listed here, and no others', () => {
    expect(entries.map(([name]) => name).sort()).toEqual(Object.keys(expected).sort());
  });

  it.each(Object.keys(expected))('%s exports what is listed, documented in docs/', async (name) => {
    const module = (await import(sourceOf(packageJson.exports[name]!))) as Record<string, unknown>;
    expect(Object.keys(module).sort()).toEqual([...expected[name]!].sort());
    // The library's names in docs/api.md; the runners' wherever the docs or the README use them.
    const docs =
      name === '.'
        ? readFileSync(join(repoRoot, 'docs', 'api.md'), 'utf8')
        : [join(repoRoot, 'README.md'), ...readdirSync(join(repoRoot, 'docs')).map((file) => join(repoRoot, 'docs', file))]
            .map((file) => readFileSync(file, 'utf8'))
            .join('\n');
    const undocumented = expected[name]!.filter((exported) => exported !== 'default' && !docs.includes(`\`${exported}`));
    expect(undocumented).toEqual([]);
  });
});
