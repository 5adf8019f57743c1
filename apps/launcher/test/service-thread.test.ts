import path from 'node:path';
import { threadId } from 'node:worker_threads';
import { freePort } from '../src/ports';
import { threadService } from '../src/service-thread';
import type { HttpThreadData } from './fixtures/http-thread';

const entry = path.join(__dirname, 'fixtures/http-thread.ts');
const get = async (port: number) => (await fetch(`http://127.0.0.1:${port}/`)).text();

describe('threadService', () => {
  it('serves from another thread once started, and not after stop', async () => {
    const port = await freePort();
    const service = threadService('http', entry, { port } satisfies HttpThreadData);
    await service.start();
    const servedBy = Number(await get(port));
    expect(servedBy).not.toBe(threadId);
    await service.stop();
    await expect(get(port)).rejects.toThrow();
  });

  it('rejects start with the error the thread met while building', async () => {
    const port = await freePort();
    const service = threadService('http', entry, { port, failBuild: true } satisfies HttpThreadData);
    await expect(service.start()).rejects.toThrow('http thread: no port configured');
    await service.stop(); // nothing left to stop
  });

  it('reports a thread that fails after the start', async () => {
    const port = await freePort();
    const crashed = new Promise<Error>((resolve) => {
      const service = threadService('http', entry, { port, crashAfterMs: 50 } satisfies HttpThreadData, {
        onCrash: resolve,
      });
      void service.start();
    });
    expect((await crashed).message).toBe('crashed on the thread');
  });
});
