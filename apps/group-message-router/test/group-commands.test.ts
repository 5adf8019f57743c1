import { createServer, Server } from 'node:http';
import { AddressInfo } from 'node:net';
import { GroupCommandEvent, INTERNAL_SECRET_HEADER } from '@parley/contracts';
import { isTransient } from '@parley/service-kit';
import { createHttpGroupCommandApplier } from '../src/group-commands';

const command: GroupCommandEvent = {
  v: 1,
  kind: 'group-command',
  from: 'alice',
  sentAt: 1,
  frame: { type: 'group', id: 'c1', op: 'rename', group: 'g1', name: 'New' },
};

describe('group-ms applier over HTTP', () => {
  let server: Server;
  let url: string;
  let status = 200;
  const received: Array<{ secret: unknown; body: unknown }> = [];
  beforeAll(async () => {
    server = createServer((req, res) => {
      let body = '';
      req.on('data', (chunk) => (body += chunk));
      req.on('end', () => {
        received.push({ secret: req.headers[INTERNAL_SECRET_HEADER], body: JSON.parse(body) });
        res.writeHead(status, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise((resolve) => server.close(resolve)));

  const applying = () => createHttpGroupCommandApplier(url, 'the-internal-secret').apply([command]);
  const failureOf = (promise: Promise<void>) =>
    promise.then(
      () => undefined,
      (err: unknown) => err,
    );

  it('posts the commands with the internal secret', async () => {
    status = 200;
    await applying();
    expect(received.at(-1)).toEqual({ secret: 'the-internal-secret', body: { commands: [command] } });
  });

  it.each([503, 500, 403, 401, 404, 413])(
    'takes a %i (group-ms down or of an earlier release, secrets not yet agreed) as transient: retried',
    async (code) => {
      status = code;
      expect(isTransient(await failureOf(applying()))).toBe(true);
    },
  );

  it('follows no redirect, so the internal secret goes nowhere else: a transient failure', async () => {
    const redirecting = createServer((req, res) =>
      res.writeHead(307, { location: `${url}/elsewhere` }).end(),
    );
    await new Promise<void>((resolve) => redirecting.listen(0, '127.0.0.1', resolve));
    received.length = 0;
    try {
      const port = (redirecting.address() as AddressInfo).port;
      const failure = await failureOf(
        createHttpGroupCommandApplier(`http://127.0.0.1:${port}`, 'the-internal-secret').apply([command]),
      );
      expect(isTransient(failure)).toBe(true);
      expect(received).toEqual([]);
    } finally {
      await new Promise((resolve) => redirecting.close(resolve));
    }
  });

  it('takes another 4xx as the ops refused: not transient, so the records are set aside', async () => {
    status = 400;
    const failure = await failureOf(applying());
    expect(failure).toBeInstanceOf(Error);
    expect(isTransient(failure)).toBe(false);
  });

  it("splits a run of large ops into calls well under group-ms's 1 MiB body limit, in order", async () => {
    status = 200;
    received.length = 0;
    const members = Array.from(
      { length: 900 },
      (_, i) => `user-${String(i).padStart(4, '0')}-${'x'.repeat(50)}`,
    );
    const creates: GroupCommandEvent[] = Array.from({ length: 20 }, (_, i) => ({
      ...command,
      frame: { type: 'group', id: `big${i}`, op: 'create', group: `g${i}`, name: 'Big', members },
    }));
    await createHttpGroupCommandApplier(url, 'the-internal-secret').apply(creates);
    const calls = received.map((r) => (r.body as { commands: GroupCommandEvent[] }).commands);
    expect(calls.length).toBeGreaterThan(1);
    for (const call of calls)
      expect(Buffer.byteLength(JSON.stringify({ commands: call }))).toBeLessThan(1024 * 1024);
    expect(calls.flat().map((c) => c.frame.id)).toEqual(creates.map((c) => c.frame.id));
  });

  it('takes an answer that stalls past the timeout after its headers as transient, not the ops refused', async () => {
    // group-ms (or a proxy in between) sends its status, then the rest of its answer never comes:
    // group-ms is in trouble, not the ops, which must be retried rather than set aside on the DLQ.
    const stalling = createServer((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' }).write('{"app');
    });
    await new Promise<void>((resolve) => stalling.listen(0, '127.0.0.1', resolve));
    try {
      const base = `http://127.0.0.1:${(stalling.address() as AddressInfo).port}`;
      const stalled = createHttpGroupCommandApplier(base, 'the-internal-secret', 300);
      const failure = await failureOf(stalled.apply([command]));
      expect([String(failure), isTransient(failure)]).toEqual([
        expect.stringMatching(/^TransientError: group-ms answered 200 but its body could not be read/),
        true,
      ]);
    } finally {
      stalling.closeAllConnections();
      await new Promise((resolve) => stalling.close(resolve));
    }
  });

  it('takes group-ms unreachable as transient', async () => {
    const unreachable = createHttpGroupCommandApplier('http://127.0.0.1:1', 'the-internal-secret', 1000);
    expect(isTransient(await failureOf(unreachable.apply([command])))).toBe(true);
  });
});
