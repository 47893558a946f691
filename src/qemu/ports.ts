// Host ports for the forwards: chosen free on 127.0.0.1, or fixed and checked.
import { createServer } from 'node:net';
import { setting, settingName } from '../config/names.js';
import type { OptionKey } from '../config/option-table.js';
import { K3sVmError } from '../errors.js';

/** Binds port (0 = any) on 127.0.0.1 and releases it; resolves the port or undefined if taken. */
function tryBind(port: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once('error', () => resolve(undefined));
    server.listen({ host: '127.0.0.1', port, exclusive: true }, () => {
      const address = server.address();
      const bound = typeof address === 'object' && address ? address.port : undefined;
      server.close(() => resolve(bound));
    });
  });
}

export async function isPortFree(port: number): Promise<boolean> {
  return (await tryBind(port)) === port;
}

/**
 * Resolves the API and SSH ports: fixed ones must be free, the others are chosen free now
 * (QEMU binds them a moment later; a race with another program is reported by QEMU).
 */
export async function choosePorts(
  fixed: {
    apiPort: number | undefined;
    sshPort: number | undefined;
  },
  /** How the user named each fixed port (the config's names); the variables by default. */
  names: Readonly<Partial<Record<OptionKey, string>>> = {},
): Promise<{ apiPort: number; sshPort: number }> {
  const taken = new Set<number>();
  const resolvePort = async (wanted: number | undefined, key: 'apiPort' | 'sshPort'): Promise<number> => {
    const name = settingName(names, key);
    if (wanted !== undefined) {
      if (!(await isPortFree(wanted))) {
        throw new K3sVmError('PORT_IN_USE', `${setting(names, key, wanted)}: port ${wanted} on 127.0.0.1 is already in use`, {
          hint: `stop what listens on ${wanted} (ss -ltnp 'sport = :${wanted}'), choose another ${name}, or leave it out to pick a free port`,
        });
      }
      taken.add(wanted);
      return wanted;
    }
    for (let attempt = 0; attempt < 20; attempt++) {
      const port = await tryBind(0);
      if (port !== undefined && !taken.has(port)) {
        taken.add(port);
        return port;
      }
    }
    throw new K3sVmError('PORT_IN_USE', 'no free TCP port could be found on 127.0.0.1', { hint: `set ${name} to a free port` });
  };
  const apiPort = await resolvePort(fixed.apiPort, 'apiPort');
  const sshPort = await resolvePort(fixed.sshPort, 'sshPort');
  return { apiPort, sshPort };
}
