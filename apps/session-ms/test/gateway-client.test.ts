import { createServer, IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { GatewayDelivery, INTERNAL_SECRET_HEADER, MAX_GROUP_MEMBERS_PER_OP } from '@parley/contracts';
import { waitFor, WsTestClient } from '@parley/test-kit';
import { SECRET as GATEWAY_SECRET, startGateway } from '../../ws-gateway/test/harness';
import {
  coalescingSends,
  createHttpGatewayClient,
  GatewayClient,
  sharingFrames,
} from '../src/gateway-client';

const SECRET = 'test-internal-secret';
const delivery = (to: string): GatewayDelivery => ({
  to,
  frame: {
    type: 'message',
    mid: `alice:${to}`,
    id: to,
    from: 'alice',
    to,
    chat: 'direct',
    body: 'hi',
    sentAt: 1,
  },
});

describe('the HTTP gateway client', () => {
  let server: Server;
  let url: string;
  let answer: (req: IncomingMessage, body: string, res: ServerResponse) => void;
  const seen: Array<{ path?: string; secret?: string; body: unknown; socket: unknown }> = [];

  beforeAll(async () => {
    server = createServer(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      const body = Buffer.concat(chunks).toString();
      seen.push({
        path: req.url,
        secret: req.headers[INTERNAL_SECRET_HEADER] as string,
        body: JSON.parse(body),
        socket: req.socket,
      });
      answer(req, body, res);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => {
    server.closeAllConnections();
    return new Promise((resolve) => server.close(resolve));
  });
  beforeEach(() => (seen.length = 0));

  it('posts the batch with the internal secret and returns each delivery’s result, over one kept-alive connection', async () => {
    answer = (_req, body, res) => {
      const { deliveries } = JSON.parse(body) as { deliveries: GatewayDelivery[] };
      const result = (d: GatewayDelivery) =>
        d.to === 'bob' ? { written: 2 } : { written: 0, missing: ['c9'] };
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ results: deliveries.map(result) }));
    };
    const client = createHttpGatewayClient(SECRET);
    expect(await client.send(url, [delivery('bob'), delivery('carol')])).toEqual([
      { written: 2 },
      { written: 0, missing: ['c9'] },
    ]);
    expect(await client.send(url, [delivery('bob')])).toEqual([{ written: 2 }]);
    expect(seen.map(({ path, secret }) => ({ path, secret }))).toEqual([
      { path: '/send', secret: SECRET },
      { path: '/send', secret: SECRET },
    ]);
    expect(seen[0].body).toEqual({
      frames: [delivery('bob').frame, delivery('carol').frame],
      deliveries: [
        { to: 'bob', frame: 0 },
        { to: 'carol', frame: 1 },
      ],
    });
    expect(seen[1].socket).toBe(seen[0].socket);
    client.close?.();
  });

  it('sends a frame pushed to several users once, and a different frame under the same mid apart', () => {
    const groupMessage = (to: string): GatewayDelivery => ({
      to,
      connIds: [`c-${to}`],
      frame: {
        type: 'message',
        mid: 'alice:g',
        id: 'g',
        from: 'alice',
        to: 'g1',
        chat: 'group',
        body: 1,
        sentAt: 1,
      },
    });
    const typing = (to: string): GatewayDelivery => ({
      to,
      frame: { type: 'typing', from: 'alice', to, chat: 'direct' },
    });
    // alice reused the id of her group message for a direct message to dave: same mid, another frame
    const reused: GatewayDelivery = {
      to: 'dave',
      frame: {
        type: 'message',
        mid: 'alice:g',
        id: 'g',
        from: 'alice',
        to: 'dave',
        chat: 'direct',
        body: 2,
        sentAt: 2,
      },
    };
    const request = sharingFrames([
      groupMessage('bob'),
      typing('bob'),
      reused,
      groupMessage('carol'),
      typing('carol'),
    ]);
    expect(request.frames).toEqual([
      groupMessage('bob').frame,
      typing('bob').frame,
      reused.frame,
      typing('carol').frame,
    ]);
    expect(request.deliveries).toEqual([
      { to: 'bob', connIds: ['c-bob'], frame: 0 },
      { to: 'bob', frame: 1 },
      { to: 'dave', frame: 2 },
      { to: 'carol', connIds: ['c-carol'], frame: 0 },
      { to: 'carol', frame: 3 },
    ]);
  });

  it('rejects on an error status, a silent gateway and an unreachable one', async () => {
    // 800 ms: the gateway here answers in this process, and a pause of it (a busy box) longer than the
    // timeout would take an answer for silence. No hold after a timeout: each call is made.
    const client = createHttpGatewayClient(SECRET, { timeoutMs: 800, silentHoldMs: 0 });
    answer = (_req, _body, res) => void res.writeHead(403).end('{}');
    await expect(client.send(url, [delivery('bob')])).rejects.toThrow(`gateway ${url} answered 403`);
    answer = () => undefined; // never answers
    await expect(client.send(url, [delivery('bob')])).rejects.toThrow('did not answer within 800 ms');
    await expect(client.send('http://127.0.0.1:1', [delivery('bob')])).rejects.toThrow(/ECONNREFUSED/);
    // Each with a reason from a short list (a metric's label), not the error's class name.
    answer = (_req, _body, res) => void res.writeHead(503).end('{}');
    await expect(client.send(url, [delivery('bob')])).rejects.toMatchObject({ reason: 'http_503' });
    answer = () => undefined;
    await expect(client.send(url, [delivery('bob')])).rejects.toMatchObject({ reason: 'timeout' });
    await expect(client.send('http://127.0.0.1:1', [delivery('bob')])).rejects.toMatchObject({
      reason: 'unreachable',
    });
    answer = (_req, _body, res) => void res.writeHead(200).end('not json');
    await expect(client.send(url, [delivery('bob')])).rejects.toMatchObject({ reason: 'bad_answer' });
    client.close?.();
  });

  it('fails calls to a gateway that let one time out at once for the hold, then lets one call try it again', async () => {
    let clock = 1_000_000;
    const client = createHttpGatewayClient(SECRET, { timeoutMs: 300, silentHoldMs: 5000, now: () => clock });
    answer = () => undefined; // a lost node: connections taken, nothing answered
    await expect(client.send(url, [delivery('bob')])).rejects.toMatchObject({ reason: 'timeout' });
    expect(seen).toHaveLength(1);
    clock += 4999;
    await expect(client.send(url, [delivery('bob')])).rejects.toMatchObject({ reason: 'silent' });
    await expect(client.announce(url)).rejects.toMatchObject({ reason: 'silent' });
    expect(seen).toHaveLength(1); // neither reached the gateway
    clock += 1;
    answer = (_req, _body, res) =>
      void res.writeHead(200, { 'content-type': 'application/json' }).end('{"results":[{"written":1}]}');
    const trying = client.send(url, [delivery('bob')]);
    // While that one is on its way, the others still fail at once.
    await expect(client.send(url, [delivery('carol')])).rejects.toMatchObject({ reason: 'silent' });
    expect(await trying).toEqual([{ written: 1 }]);
    expect(await client.send(url, [delivery('carol')])).toEqual([{ written: 1 }]);
    expect(seen.map((s) => (s.body as { deliveries: GatewayDelivery[] }).deliveries[0].to)).toEqual([
      'bob',
      'bob',
      'carol',
    ]);
    client.close?.();
  });

  it('ends the hold after its length though the wall clock steps back meanwhile (NTP correcting the host)', async () => {
    const wall = Date.now;
    let stepMs = 0;
    const clock = jest.spyOn(Date, 'now').mockImplementation(() => wall() - stepMs);
    const client = createHttpGatewayClient(SECRET, { timeoutMs: 200, silentHoldMs: 300 });
    try {
      answer = () => undefined;
      await expect(client.send(url, [delivery('bob')])).rejects.toMatchObject({ reason: 'timeout' });
      stepMs = 3_600_000;
      await new Promise((resolve) => setTimeout(resolve, 400));
      answer = (_req, _body, res) =>
        void res.writeHead(200, { 'content-type': 'application/json' }).end('{"results":[{"written":1}]}');
      // Held by the wall clock, every push to this gateway failed `silent` for the hour of the step.
      expect(await client.send(url, [delivery('bob')])).toEqual([{ written: 1 }]);
    } finally {
      clock.mockRestore();
      client.close?.();
    }
  });

  it('holds only the gateway that timed out, and not after a refusal or an error status', async () => {
    const client = createHttpGatewayClient(SECRET, { timeoutMs: 300, silentHoldMs: 60_000 });
    answer = () => undefined;
    await expect(client.send(url, [delivery('bob')])).rejects.toMatchObject({ reason: 'timeout' });
    const refusing = 'http://127.0.0.1:1';
    await expect(client.send(refusing, [delivery('bob')])).rejects.toMatchObject({ reason: 'unreachable' });
    await expect(client.send(refusing, [delivery('bob')])).rejects.toMatchObject({ reason: 'unreachable' });
    await expect(client.send(url, [delivery('bob')])).rejects.toMatchObject({ reason: 'silent' });
    const other = createHttpGatewayClient(SECRET, { timeoutMs: 300, silentHoldMs: 60_000 });
    answer = (_req, _body, res) => void res.writeHead(503).end('{}');
    await expect(other.send(url, [delivery('bob')])).rejects.toMatchObject({ reason: 'http_503' });
    await expect(other.send(url, [delivery('bob')])).rejects.toMatchObject({ reason: 'http_503' });
    client.close?.();
    other.close?.();
  });

  it('gives up on an answer that trickles on past the timeout, or that is larger than any answer to the call', async () => {
    const client = createHttpGatewayClient(SECRET, { timeoutMs: 500, silentHoldMs: 0 });
    // A byte every 100 ms: the socket is never idle for the timeout, and the answer never ends.
    answer = (_req, _body, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }).write('{"results":[{"written":1}]');
      const trickle = setInterval(() => res.write(' '), 100);
      res.once('close', () => clearInterval(trickle));
    };
    const gaveUp = client.send(url, [delivery('bob')]).catch((err: unknown) => err);
    const stillWaiting = new Promise((resolve) => setTimeout(() => resolve('still waiting after 3 s'), 3000));
    expect(await Promise.race([gaveUp, stillWaiting])).toMatchObject({ reason: 'timeout' });
    // Valid, but 8 MiB for one delivery (an endless one was read until session-ms ran out of memory).
    const padding = 'x'.repeat(8 * 1024 * 1024);
    answer = (_req, _body, res) =>
      void res.writeHead(200).end(JSON.stringify({ results: [{ written: 1 }], padding }));
    await expect(client.send(url, [delivery('bob')])).rejects.toMatchObject({ reason: 'bad_answer' });
    // An answer as large as the request's connection ids named missing still passes.
    const connIds = Array.from({ length: 5000 }, (_, i) => `connection-${i}`);
    answer = (_req, _body, res) =>
      void res.writeHead(200).end(JSON.stringify({ results: [{ written: 0, missing: connIds }] }));
    expect(await client.send(url, [{ ...delivery('bob'), connIds }])).toEqual([
      { written: 0, missing: connIds },
    ]);
    client.close?.();
  });

  it('refuses as bad_answer results that are not GatewaySendResponse’s, rather than handing them on', async () => {
    const client = createHttpGatewayClient(SECRET);
    // Each passed before as a GatewaySendResult: `missing` as a string made delivery forget the
    // connections named by its characters, and a null threw where delivery read its `missing`.
    for (const results of [[null], [{ written: 1, missing: 'c-bob' }], [{ written: '1' }], [{}]]) {
      answer = (_req, _body, res) => void res.writeHead(200).end(JSON.stringify({ results }));
      await expect(client.send(url, [delivery('bob')])).rejects.toMatchObject({ reason: 'bad_answer' });
    }
    client.close?.();
  });
});

describe('the HTTP gateway client and a ws-gateway', () => {
  /** A 64-character user id: the longest there is. */
  const longId = (i: number) => `u${String(i).padStart(63, '0')}`;
  const members = Array.from({ length: MAX_GROUP_MEMBERS_PER_OP }, (_, i) => longId(i));
  /** The notice of a group created with 1,024 members: some 69 KB, more than a client frame may be. */
  const groupNotice = (to: string, connId: string, g: number): GatewayDelivery => ({
    to,
    connIds: [connId],
    frame: {
      type: 'group',
      mid: `~g${g}`,
      op: 'create',
      group: `g${g}`,
      name: 'Team',
      members,
      by: to,
      at: 1,
    },
  });

  it.each([
    ['its default MAX_FRAME_BYTES', 64 * 1024],
    ['a MAX_FRAME_BYTES of 4 KiB', 4096],
  ])(
    'gets 970 group notices of 1,024-member groups pushed to a device that connected through to a gateway with %s',
    async (_name, maxFrameBytes) => {
      const env = await startGateway({ maxFrameBytes });
      const client = createHttpGatewayClient(GATEWAY_SECRET, { timeoutMs: 30_000 });
      const bob = await WsTestClient.connect(await env.url('bob'));
      try {
        const connId = bob.frames[0].connId as string;
        const deliveries = Array.from({ length: 970 }, (_, g) => groupNotice('bob', connId, g));
        // One call of 67 MB was refused 413: a gateway took 1,000 times MAX_FRAME_BYTES + 1 KiB (with
        // 4 KiB, 5 MB: a retry's 500 notices were refused as well).
        const { port } = env.gateway.internal.server.address() as AddressInfo;
        const results = await client.send(`http://127.0.0.1:${port}`, deliveries);
        expect(results).toHaveLength(970);
        // What a slow reader had no room for is pushed again at its retry; this one reads at once.
        expect(results.every((r) => r.written <= 1 && r.missing === undefined)).toBe(true);
        const written = results.filter((r) => r.written === 1).length;
        const notices = () => bob.frames.filter((f) => f.type === 'group').map((f) => f.mid as string);
        await waitFor(() => notices().length === written, 10_000, 'the notices written');
        // Cut in calls one after the other: in the order pushed.
        const order = notices().map((mid) => Number(mid.slice(2)));
        expect(order).toEqual([...order].sort((a, b) => a - b));
        expect(order[0]).toBe(0);
      } finally {
        client.close?.();
        await bob.close();
        await env.gateway.stop();
      }
    },
    60_000,
  );
});

describe('coalescingSends', () => {
  const G1 = 'http://gateway-1:8080';
  const G2 = 'http://gateway-2:8080';
  /** A gateway client that answers `written: 1` for each delivery and remembers every call. */
  const recording = (fail?: (url: string) => Error | undefined) => {
    const calls: Array<{ url: string; to: string[] }> = [];
    const client: GatewayClient = {
      async send(url, deliveries) {
        calls.push({ url, to: deliveries.map((d) => d.to) });
        const err = fail?.(url);
        if (err) throw err;
        return deliveries.map((d) => ({ written: d.to.length }));
      },
      announce: async () => undefined,
    };
    return { calls, client };
  };
  const results = (...tos: string[]) => tos.map((to) => ({ written: to.length }));

  it('sends to one gateway in the same turn as one call, each caller getting its own results', async () => {
    const { calls, client } = recording();
    const gateways = coalescingSends(client);
    const [a, b, c] = await Promise.all([
      gateways.send(G1, [delivery('bob'), delivery('carol')]),
      gateways.send(G1, [delivery('dave')]),
      gateways.send(G1, [delivery('erin'), delivery('fay')]),
    ]);
    expect(calls).toEqual([{ url: G1, to: ['bob', 'carol', 'dave', 'erin', 'fay'] }]);
    expect([a, b, c]).toEqual([results('bob', 'carol'), results('dave'), results('erin', 'fay')]);
  });

  it('keeps gateways, and turns, apart', async () => {
    const { calls, client } = recording();
    const gateways = coalescingSends(client);
    await Promise.all([gateways.send(G1, [delivery('bob')]), gateways.send(G2, [delivery('carol')])]);
    await gateways.send(G1, [delivery('dave')]);
    expect(calls).toEqual([
      { url: G1, to: ['bob'] },
      { url: G2, to: ['carol'] },
      { url: G1, to: ['dave'] },
    ]);
  });

  it('never puts more than the batch limit in one call', async () => {
    const { calls, client } = recording();
    const gateways = coalescingSends(client, 3);
    const sent = await Promise.all([
      gateways.send(G1, [delivery('a1'), delivery('a2')]),
      gateways.send(G1, [delivery('b1')]),
      gateways.send(G1, [delivery('c1'), delivery('c2')]),
      gateways.send(G1, [delivery('d1')]),
    ]);
    expect(calls.map((c) => c.to)).toEqual([
      ['a1', 'a2', 'b1'],
      ['c1', 'c2', 'd1'],
    ]);
    expect(sent).toEqual([results('a1', 'a2'), results('b1'), results('c1', 'c2'), results('d1')]);
  });

  it('fails the sends of a failed call, and only those', async () => {
    const { client } = recording((url) => (url === G2 ? new Error('gateway-2 is down') : undefined));
    const gateways = coalescingSends(client);
    const sent = await Promise.allSettled([
      gateways.send(G1, [delivery('bob')]),
      gateways.send(G2, [delivery('carol')]),
      gateways.send(G2, [delivery('dave')]),
    ]);
    expect(sent.map((s) => s.status)).toEqual(['fulfilled', 'rejected', 'rejected']);
    expect((sent[1] as PromiseRejectedResult).reason.message).toBe('gateway-2 is down');
  });

  it('refuses an answer that does not hold one result per delivery', async () => {
    const gateways = coalescingSends({
      send: async () => [{ written: 1 }],
      announce: async () => undefined,
    });
    await expect(
      Promise.all([gateways.send(G1, [delivery('bob')]), gateways.send(G1, [delivery('carol')])]),
    ).rejects.toThrow(`gateway ${G1} answered 1 results for 2 deliveries`);
  });
});
