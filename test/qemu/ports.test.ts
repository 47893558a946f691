// Host ports for the forwards: free ones chosen, fixed ones checked.
import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { choosePorts, isPortFree } from '../../src/qemu/ports.js';

describe('ports', () => {
  it('chooses two different free ports on 127.0.0.1', async () => {
    const { apiPort, sshPort } = await choosePorts({ apiPort: undefined, sshPort: undefined });
    expect(apiPort).not.toBe(sshPort);
    expect(await isPortFree(apiPort)).toBe(true);
    expect(await isPortFree(sshPort)).toBe(true);
  });

  it('refuses a fixed port that is taken, naming the setting as it was given', async () => {
    const server = createServer().listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    const port = (server.address() as { port: number }).port;
    try {
      expect(await isPortFree(port)).toBe(false);
      await expect(choosePorts({ apiPort: port, sshPort: undefined })).rejects.toMatchObject({
        code: 'PORT_IN_USE',
        message: expect.stringContaining(`K3S_VM_API_PORT=${port}`),
      });
      // As the user gave it: a flag is named as the flag.
      await expect(choosePorts({ apiPort: undefined, sshPort: port }, { sshPort: '--ssh-port' })).rejects.toMatchObject({
        message: `--ssh-port=${port}: port ${port} on 127.0.0.1 is already in use`,
        hint: expect.stringContaining('choose another --ssh-port, or leave it out'),
      });
    } finally {
      server.close();
    }
  });
});
