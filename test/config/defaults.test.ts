// The defaults that depend on the run: the boot deadline and its scaling under emulation.
import { describe, expect, it } from 'vitest';
import { emulationTimeoutFactor, timeoutMsFor } from '../../src/config/defaults.js';
import { resolveConfig } from '../../src/config/resolve-config.js';

describe('the boot deadline', () => {
  it('is scaled for software emulation by default, and taken as given when configured', () => {
    const config = resolveConfig({ projectRoot: '/project' }, {});
    expect(emulationTimeoutFactor).toBe(3);
    expect(timeoutMsFor(config.timeoutSeconds, 'tcg')).toBe(3 * timeoutMsFor(config.timeoutSeconds, 'kvm'));
    expect(timeoutMsFor(resolveConfig({ projectRoot: '/project', timeoutSeconds: 42 }, {}).timeoutSeconds, 'tcg')).toBe(42_000);
    expect(timeoutMsFor(42, 'kvm')).toBe(42_000);
  });
});
