import { existsSync, mkdtempSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { threadId } from 'node:worker_threads';
import { waitFor } from '@parley/test-kit';
import { freePort } from '../src/ports';
import { threadService, ThreadServiceOptions } from '../src/service-thread';
import type { HttpThreadData } from './fixtures/http-thread';

const entry = path.join(__dirname, 'fixtures/http-thread.ts');
const get = async (port: number) => (await fetch(`http://127.0.0.1:${port}/`)).text();
const stoppedFile = () => path.join(mkdtempSync(path.join(os.tmpdir(), 'parley-thread-')), 'stopped');
const serve = (data: Omit<HttpThreadData, 'port'> = {}, options?: ThreadServiceOptions) =>
  freePort().then((port) => ({ port, service: threadService('http', entry, { port, ...data }, options) }));

describe('threadService', () => {
  it('serves from another thread once started; stop runs the service’s own stop', async () => {
    const file = stoppedFile();
    const { port, service } = await serve({ stoppedFile: file });
    await service.start();
    expect(Number(await get(port))).not.toBe(threadId);
    await service.stop();
    expect(existsSync(file)).toBe(true);
    await expect(get(port)).rejects.toThrow();
  });

  it('gives every caller of stop the same wait', async () => {
    const file = stoppedFile();
    const { service } = await serve({ stoppedFile: file });
    await service.start();
    const first = service.stop();
    await service.stop(); // resolves only once the first has finished
    expect(existsSync(file)).toBe(true);
    await first;
  });

  it('rejects start with the error the thread met while building', async () => {
    const { service } = await serve({ failBuild: true });
    await expect(service.start()).rejects.toThrow('http thread: no port configured');
    await service.stop(); // nothing left to stop
  });

  it('rejects start with a listen error’s code, address and port, which npm start names in plain words', async () => {
    const taken = http.createServer();
    const { port, service } = await serve();
    await new Promise<void>((resolve) => taken.listen(port, '127.0.0.1', resolve));
    try {
      await expect(service.start()).rejects.toMatchObject({ code: 'EADDRINUSE', address: '127.0.0.1', port });
      await service.stop();
    } finally {
      taken.close();
    }
  });

  it('rejects stop when the service’s own stop fails', async () => {
    const { service } = await serve({ failStop: true });
    await service.start();
    await expect(service.stop()).rejects.toThrow('http thread: could not flush');
  });

  it('reports a thread that fails after the start once, and can still be stopped', async () => {
    const crashes: Error[] = [];
    const { service } = await serve({ crashAfterMs: 20 }, { onCrash: (err) => crashes.push(err) });
    await service.start();
    // Waited for: on a busy box the thread's crash can take longer than a fixed wait to be reported.
    await waitFor(() => crashes.length > 0, 5000, 'the crash reported');
    await new Promise((resolve) => setTimeout(resolve, 300)); // and only once
    expect(crashes.map((err) => err.message)).toEqual(['http thread failed: crashed on the thread']);
    await service.stop();
  });

  it('logs a rejection nothing handled on the thread and goes on serving, as a service process does', async () => {
    const crashes: Error[] = [];
    const { port, service } = await serve({ rejectAfterMs: 20 }, { onCrash: (err) => crashes.push(err) });
    await service.start();
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(crashes).toEqual([]);
    expect(Number(await get(port))).not.toBe(threadId);
    await service.stop();
  });
});
