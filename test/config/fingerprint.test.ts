import { describe, expect, it } from 'vitest';
import { fingerprintDifferences, hashOf, runtimeFingerprint } from '../../src/config/fingerprint.js';
import { resolveConfig } from '../../src/config/resolve-config.js';

const base = resolveConfig({ projectRoot: '/project' }, {});

describe('fingerprints', () => {
  it('hashes objects independently of key order', () => {
    expect(hashOf({ a: 1, b: [1, 2] })).toBe(hashOf({ b: [1, 2], a: 1 }));
    expect(hashOf({ a: 1 })).not.toBe(hashOf({ a: 2 }));
  });

  it('reports no difference for the same config, and each changed field as old → new', () => {
    const running = { ...runtimeFingerprint(base), apiPort: '41000', sshPort: '41001' };
    expect(fingerprintDifferences(running, runtimeFingerprint(base))).toEqual([]);
    const changed = resolveConfig({ projectRoot: '/project', memoryMiB: 8192, cpus: 4 }, {});
    expect(fingerprintDifferences(running, runtimeFingerprint(changed))).toEqual(['cpus: 2 → 4', 'memoryMiB: 4096 → 8192']);
  });

  it('accepts any port when none is fixed, and flags a fixed port that differs', () => {
    const running = { ...runtimeFingerprint(base), apiPort: '41000', sshPort: '41001' };
    expect(fingerprintDifferences(running, runtimeFingerprint(resolveConfig({ projectRoot: '/project', apiPort: 41000 }, {})))).toEqual([]);
    expect(fingerprintDifferences(running, runtimeFingerprint(resolveConfig({ projectRoot: '/project', apiPort: 42000 }, {})))).toEqual([
      'apiPort: 41000 → 42000',
    ]);
  });
});
