import { execFile } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import {
  ErrorFrame,
  INTERNAL_SECRET_HEADER,
  MAX_CONN_ID_LENGTH,
  MAX_DELIVERY_CONN_IDS,
  TOPICS,
  TopicSpec,
} from '@parley/contracts';
import { createKafkaBus, MemoryBus, startBroker } from '@parley/kafka';
import { Kafka, logLevel } from 'kafkajs';
import {
  createMetricsRegistry,
  createTokenVerifier,
  DEV_JWT_SECRET,
  issueToken,
  Readiness,
  silentLogger,
  TransientError,
} from '@parley/service-kit';
import { waitFor, WsTestClient } from '@parley/test-kit';
import { createWsGateway } from '../src/app';
import { STALLED_READER_MS } from '../src/connections';
import { advertisedInternalUrl } from '../src/config';
import { SECRET, startGateway, TEST_SETTINGS } from './harness';

const execFileAsync = promisify(execFile);

describe('ws-gateway', () => {
  let env: Awaited<ReturnType<typeof startGateway>>;
  const clients: WsTestClient[] = [];
  const connect = async (user: string, query = '', options: { autoPong?: boolean } = {}) => {
    const client = await WsTestClient.connect(await env.url(user, query), options);
    clients.push(client);
    return client;
  };
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
    await env?.gateway.stop();
  });

  it('greets with hello, publishes the frame stamped with the authenticated sender, then answers accepted', async () => {
    env = await startGateway();
    const alice = await connect('alice', '&deviceId=phone');
    expect(alice.frames[0]).toMatchObject({ type: 'hello', user: 'alice', deviceId: 'phone' });
    alice.send({ type: 'message', id: 'c1', to: 'bob', body: { text: 'hi' }, from: 'mallory', sentAt: 1 });
    expect(await alice.next((f) => f.type === 'accepted')).toEqual({
      type: 'accepted',
      id: 'c1',
      mid: 'alice:c1',
    });
    const [event] = env.bus.events(TOPICS.inbound);
    expect(event).toMatchObject({
      from: 'alice',
      deviceId: 'phone',
      gateway: 'gw-test',
      frame: { type: 'message', id: 'c1', to: 'bob', chat: 'direct' },
    });
    expect(event.frame).not.toHaveProperty('from');
    expect(event.sentAt).toBeGreaterThan(1);
    await waitFor(() => env.bus.events(TOPICS.connections).some((e) => e.kind === 'connection-up'));
  });

  it('answers a read receipt that carries an id with accepted once stored, and one without an id with nothing', async () => {
    env = await startGateway();
    const alice = await connect('alice');
    alice.send({ type: 'read', to: 'bob', mids: ['bob:m1'] });
    alice.send({ type: 'read', id: 'r1', to: 'bob', mids: ['bob:m2'] });
    expect(await alice.next((f) => f.type === 'accepted')).toEqual({
      type: 'accepted',
      id: 'r1',
      mid: 'alice:r1',
    });
    expect(alice.ofType('accepted')).toHaveLength(1);
    expect(env.bus.events(TOPICS.inbound).map((e) => e.frame)).toEqual([
      { type: 'read', to: 'bob', mids: ['bob:m1'] },
      { type: 'read', id: 'r1', to: 'bob', mids: ['bob:m2'] },
    ]);
  });

  it('refuses a bad, expired or missing token with 401 before the upgrade', async () => {
    env = await startGateway();
    const base = `ws://127.0.0.1:${env.port}/v1/ws`;
    const wrongKey = await issueToken('another-secret-of-sufficient-length!', 'alice');
    const expired = await issueToken(DEV_JWT_SECRET, 'alice', -60);
    for (const url of [
      base,
      `${base}?token=${wrongKey}`,
      `${base}?token=${expired}`,
      `${base}?token=garbage`,
    ]) {
      const refusal = await WsTestClient.refusal(url);
      expect(refusal.status).toBe(401);
      expect(JSON.parse(refusal.body)).toMatchObject({ error: { code: 'unauthorized' } });
    }
    const header = await WsTestClient.connect(base, {
      headers: { authorization: `Bearer ${await issueToken(DEV_JWT_SECRET, 'bob')}` },
    });
    clients.push(header);
    expect(header.frames[0]).toMatchObject({ type: 'hello', user: 'bob' });
  });

  it('counts refused connections and oversized frames in parley_ws_refused_total by stage and code', async () => {
    env = await startGateway({ maxFrameBytes: 1024 });
    const refused = () => refusedByStageAndCode(env.gateway);
    const base = `ws://127.0.0.1:${env.port}/v1/ws`;
    const wrongKey = await issueToken('another-secret-of-sufficient-length!', 'alice');
    expect((await WsTestClient.refusal(`${base}?token=${wrongKey}`)).status).toBe(401);
    expect((await WsTestClient.refusal(base)).status).toBe(401);
    const alice = await connect('alice');
    alice.send({ type: 'message', id: 'big', to: 'bob', body: 'x'.repeat(2000) });
    expect(await alice.closed()).toBe(1009);
    expect(await refused()).toEqual({ 'connect unauthorized': 2, 'frame too_large': 1 });
  });

  it('refuses other paths and bad device ids', async () => {
    env = await startGateway({ allowedOrigins: ['https://app.example'] });
    const token = await issueToken(DEV_JWT_SECRET, 'alice');
    expect((await WsTestClient.refusal(`ws://127.0.0.1:${env.port}/other?token=${token}`)).status).toBe(404);
    expect(
      (await WsTestClient.refusal(`ws://127.0.0.1:${env.port}/v1/ws?token=${token}&deviceId=a%20b`)).status,
    ).toBe(400);
  });

  it('lets go of the socket of a refused upgrade once its client closes, even one that wrote past its request', async () => {
    env = await startGateway();
    const open = () =>
      new Promise<number>((resolve, reject) =>
        env.gateway.http.server.getConnections((err, n) => (err ? reject(err) : resolve(n))),
      );
    // A client that sends a first frame with its request, as some do, before it reads the answer.
    for (const after of ['', 'x'.repeat(70_000)]) {
      const { socket, answer, closed } = await rawUpgrade(env.port, '/v1/ws?token=garbage', after);
      await waitFor(() => answer().includes('"unauthorized"'), 5000, 'the 401');
      expect(answer()).toMatch(/^HTTP\/1\.1 401 /);
      socket.end();
      await closed;
      // Before, the server read no more from it: it never saw the client's end, and held it for good
      // (a descriptor each, and stop() waited on it without end).
      await waitFor(async () => (await open()) === 0, 5000, 'the server to let go of the socket');
    }
  });

  it('refuses an upgrade whose path is no valid URL with 400 naming it, not 500 internal', async () => {
    env = await startGateway();
    for (const target of ['//%%/v1/ws', 'http://[::1/v1/ws']) {
      const { answer, closed } = await rawUpgrade(env.port, target);
      await closed;
      const [head, body] = answer().split('\r\n\r\n');
      expect({ target, status: head!.split(' ')[1] }).toEqual({ target, status: '400' });
      expect(JSON.parse(body!)).toEqual({
        error: { code: 'invalid_request', message: expect.stringMatching(/^path: is not a valid URL/) },
      });
    }
  });

  it('answers an upgrade that ws itself refuses (bad key, unknown version, not a GET) with 400 and the error body', async () => {
    env = await startGateway({ allowedOrigins: ['https://app.example'] });
    const token = await issueToken(DEV_JWT_SECRET, 'alice');
    const key = Buffer.alloc(16, 1).toString('base64');
    const upgrade = (method: string, headers: string) =>
      `${method} /v1/ws?token=${token} HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\n${headers}Content-Length: 0\r\n\r\n`;
    const cases = [
      {
        request: upgrade('GET', 'Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n'),
        names: /Sec-WebSocket-Key/,
      },
      {
        request: upgrade('GET', `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 7\r\n`),
        // ws takes 8 as well: the answer names both, as docs/protocol.md does.
        names: /Sec-WebSocket-Version: 13 or 8\)$/,
      },
      {
        request: upgrade('POST', `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n`),
        names: /HTTP method/,
      },
      {
        // From an origin not allowed, too: no WebSocket to close with 1008 can come of it.
        request: upgrade(
          'GET',
          'Origin: https://evil.example\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n',
        ),
        names: /Sec-WebSocket-Key/,
      },
    ];
    for (const { request, names } of cases) {
      const { answer, closed } = await rawRequest(env.port, request);
      await closed;
      const [head, body] = answer().split('\r\n\r\n');
      expect(head).toMatch(/^HTTP\/1\.1 400 /);
      expect(head).toMatch(/content-type: application\/json/i);
      expect(JSON.parse(body!)).toEqual({
        error: { code: 'invalid_request', message: expect.stringMatching(names) },
      });
    }
    expect(await refusedByStageAndCode(env.gateway)).toEqual({ 'connect invalid_request': 4 }); // each once
  });

  it('answers a plain GET of /v1/ws (its Upgrade header lost on the way) with 426 and what is missing', async () => {
    env = await startGateway();
    const token = await issueToken(DEV_JWT_SECRET, 'alice');
    const res = await fetch(`http://127.0.0.1:${env.port}/v1/ws?token=${token}`);
    expect(res.status).toBe(426);
    expect(await res.json()).toEqual({
      error: {
        code: 'invalid_request',
        message: expect.stringMatching(/^this endpoint needs a WebSocket upgrade/),
      },
    });
  });

  it('closes a socket from an origin not on the allowlist with 1008, as a browser can see', async () => {
    env = await startGateway({ allowedOrigins: ['https://app.example'] });
    const token = await issueToken(DEV_JWT_SECRET, 'alice');
    const closeFrom = async (origin: string) => {
      const socket = new WebSocket(`ws://127.0.0.1:${env!.port}/v1/ws?token=${token}`, {
        headers: { origin },
      });
      const frames: string[] = [];
      const errors: string[] = [];
      socket.on('message', (data) => frames.push(data.toString()));
      socket.on('error', (err) => errors.push(err.message));
      const [code, reason] = await new Promise<[number, string]>((resolve) =>
        socket.once('close', (closeCode, closeReason) => resolve([closeCode, closeReason.toString()])),
      );
      return { code, reason, frames, errors };
    };
    expect(await closeFrom('https://evil.example')).toEqual({
      code: 1008,
      reason: 'origin https://evil.example is not allowed',
      frames: [],
      errors: [],
    });
    // A close reason is at most 123 bytes: cut by bytes, not characters (Node reads such a header as
    // latin1, so 60 'é' are 120 bytes of UTF-8 in the reason).
    const long = await closeFrom(`https://${'é'.repeat(60)}`);
    expect(long).toEqual({
      code: 1008,
      reason: expect.stringMatching(/^origin https:\/\/é+$/),
      frames: [],
      errors: [],
    });
    expect(Buffer.byteLength(long.reason)).toBeLessThanOrEqual(123);
    const allowed = await WsTestClient.connect(`ws://127.0.0.1:${env.port}/v1/ws?token=${token}`, {
      headers: { origin: 'https://app.example' },
    });
    await allowed.close();
  });

  it('survives a frame past the size limit on a socket it closes 1008 at the upgrade (origin, too many sockets)', async () => {
    env = await startGateway({ allowedOrigins: ['https://app.example'], maxFrameBytes: 1024 });
    const token = await issueToken(DEV_JWT_SECRET, 'alice');
    const uncaught: unknown[] = [];
    const onUncaught = (err: unknown) => uncaught.push(err);
    process.on('uncaughtException', onUncaught);
    try {
      // The client writes before it reads the server's close: the server's reader meets the frame.
      const socket = new WebSocket(`ws://127.0.0.1:${env.port}/v1/ws?token=${token}`, {
        headers: { origin: 'https://evil.example' },
      });
      socket.on('error', () => undefined);
      socket.once('open', () => socket.send('x'.repeat(2000)));
      const code = await new Promise<number>((resolve) => socket.once('close', resolve));
      expect([1008, 1009]).toContain(code);
      await sleep(50);
      expect(uncaught).toEqual([]);
    } finally {
      process.off('uncaughtException', onUncaught);
    }
    const allowed = await connect('alice', '', {});
    expect(allowed.frames[0]).toMatchObject({ type: 'hello' });
  });

  it('answers invalid frames with error frames naming the field, and ping with pong', async () => {
    env = await startGateway();
    const alice = await connect('alice');
    alice.send('{"type":');
    alice.send({ type: 'message', id: 'c2', to: 'b b', body: 1 });
    alice.send({ type: 'ping' });
    await alice.until(() => alice.ofType('error').length === 2 && alice.ofType('pong').length === 1);
    expect(alice.ofType('error')).toEqual([
      { type: 'error', code: 'invalid_frame', message: expect.stringContaining('frame: is not valid JSON') },
      { type: 'error', id: 'c2', code: 'invalid_frame', message: 'to: must match ^[A-Za-z0-9_.-]{1,64}$' },
    ]);
    expect(env.bus.events(TOPICS.inbound)).toEqual([]);
  });

  it('takes a frame that starts with a byte-order mark, as POST /v1/send takes it', async () => {
    env = await startGateway();
    const alice = await connect('alice');
    alice.send('\uFEFF{"type":"message","id":"bom1","to":"bob","body":1}');
    expect(await alice.next((f) => f.type === 'accepted' || f.type === 'error')).toEqual({
      type: 'accepted',
      id: 'bom1',
      mid: 'alice:bom1',
    });
  });

  it('refuses an ack or read naming a mid with a NUL, a control character or a lone surrogate, which storage cannot hold', async () => {
    env = await startGateway();
    const alice = await connect('alice');
    // Such a mid reaches persistence-ms (an ack of a mid not pending is told to storage), whose
    // Postgres refuses it: the record is retried, holding the partition, then parked on the DLQ.
    alice.send({ type: 'ack', mids: ['bob:c1\u0000'] });
    alice.send({ type: 'ack', mids: ['bob:\ud800'] });
    alice.send({ type: 'read', id: 'r1', to: 'bob', mids: ['bob:c1\n'] });
    alice.send({ type: 'ack', mids: ['bob:c1', '~dlv:bob:AbC-_'] });
    await alice.until(() => alice.ofType('error').length === 3);
    expect(alice.ofType('error').map((f) => [f.id, f.code, f.message])).toEqual([
      [undefined, 'invalid_frame', expect.stringMatching(/^mids\[0\]: must match/)],
      [undefined, 'invalid_frame', expect.stringMatching(/^mids\[0\]: must match/)],
      ['r1', 'invalid_frame', expect.stringMatching(/^mids\[0\]: must match/)],
    ]);
    await waitFor(() => env.bus.events(TOPICS.inbound).length === 1);
    expect(env.bus.events(TOPICS.inbound).map((e) => e.frame)).toEqual([
      { type: 'ack', mids: ['bob:c1', '~dlv:bob:AbC-_'] },
    ]);
  });

  it('closes with 1009 on a frame over the size limit', async () => {
    env = await startGateway({ maxFrameBytes: 1024 });
    const alice = await connect('alice');
    alice.send({ type: 'message', id: 'big', to: 'bob', body: 'x'.repeat(2000) });
    expect(await alice.closed()).toBe(1009);
  });

  it('refuses a frame whose numbers the server writes out past the size limit, which no Kafka record would hold at the largest limit', async () => {
    const broker = await startBroker({ logger: silentLogger() });
    const kafka = new Kafka({ brokers: [broker.address], logLevel: logLevel.NOTHING });
    const gateway = createWsGateway({
      bus: createKafkaBus({ kafka, logger: silentLogger() }),
      logger: silentLogger(),
      metrics: createMetricsRegistry('ws-gateway', { collectDefaults: false }),
      readiness: new Readiness(),
      verifyToken: createTokenVerifier({ JWT_SECRET: DEV_JWT_SECRET }),
      internalSecret: SECRET,
      port: 0,
      internalPort: 0,
      host: '127.0.0.1',
      settings: { ...TEST_SETTINGS, maxFrameBytes: 512 * 1024 }, // the largest MAX_FRAME_BYTES
    });
    try {
      await gateway.start();
      const { port } = gateway.http.server.address() as net.AddressInfo;
      const alice = await WsTestClient.connect(
        `ws://127.0.0.1:${port}/v1/ws?token=${await issueToken(DEV_JWT_SECRET, 'alice')}`,
      );
      clients.push(alice);
      // 500 KB as sent; as the server writes it (each 1e20 in 21 digits) 2.2 MB, past Kafka's 1 MiB.
      const body = Array(100_000).fill('1e20').join(',');
      alice.send(`{"type":"message","id":"n1","to":"bob","body":[${body}]}`);
      expect(await alice.next((f) => f.id === 'n1', 10_000)).toMatchObject({
        type: 'error',
        code: 'too_large',
        message: expect.stringMatching(
          /^frame: must be at most 524288 bytes \(got 2\d{6}\) as the server writes it$/,
        ),
      });
    } finally {
      await gateway.stop();
      await broker.stop();
    }
  });

  it('closes with 1007 on a text frame that is not UTF-8, as the WebSocket standard requires', async () => {
    env = await startGateway();
    const alice = await connect('alice');
    alice.socket.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { binary: false });
    expect(await alice.closed()).toBe(1007);
  });

  it('rate-limits with rate_limited errors and closes with 4029 when it goes on', async () => {
    env = await startGateway({ ratePerSecond: 0.1, rateBurst: 2, rateCloseAfter: 3 });
    const alice = await connect('alice');
    for (let i = 0; i < 6; i++) alice.send({ type: 'message', id: `r${i}`, to: 'bob', body: i });
    expect(await alice.closed()).toBe(4029);
    const refused = alice.ofType('error') as unknown as Array<Required<ErrorFrame>>;
    expect(refused.map((f) => f.code)).toEqual(['rate_limited', 'rate_limited', 'rate_limited']);
    // At 0.1 frames/s the next token is up to 10 s away: the frame says so in ms, as its message in s.
    for (const frame of refused) {
      expect(frame.retryAfterMs).toBeGreaterThan(9000);
      expect(frame.retryAfterMs).toBeLessThanOrEqual(10_000);
      const seconds = Number(/^too many frames: retry after ([\d.]+) s$/.exec(frame.message)?.[1]);
      expect(Math.abs(seconds * 1000 - frame.retryAfterMs)).toBeLessThanOrEqual(10);
    }
    await waitFor(() => env.bus.events(TOPICS.inbound).length === 2, 2000, 'the two frames within the burst');
  });

  it("holds a user's sockets together to userRateFactor sockets' budget, and frees the rest when one is left", async () => {
    env = await startGateway({ ratePerSecond: 0.1, rateBurst: 2, userRateFactor: 2, rateCloseAfter: 100 });
    const devices = [await connect('alice'), await connect('alice'), await connect('alice')];
    const bob = await connect('bob');
    const send = async (client: WsTestClient, id: string) => {
      client.send({ type: 'message', id, to: 'carol', body: id });
      await client.next((f) => f.id === id);
    };
    // Each socket alone could send 2 (its burst); the three together may send 4 (two sockets' worth).
    for (const [i, device] of devices.entries()) for (const n of [1, 2]) await send(device, `a${i}-${n}`);
    const outcome = (client: WsTestClient) =>
      client.frames
        .filter((f) => f.type !== 'hello')
        .map((f) => f.type)
        .join(',');
    expect(devices.map(outcome)).toEqual(['accepted,accepted', 'accepted,accepted', 'error,error']);
    expect(devices[2].ofType('error').map((f) => f.code)).toEqual(['rate_limited', 'rate_limited']);
    for (const n of [1, 2]) await send(bob, `b${n}`); // another user's budget is his own
    expect(outcome(bob)).toEqual('accepted,accepted');

    // With one socket left, only its own budget counts: a new socket has its full burst.
    await devices[0].close();
    await devices[1].close();
    await waitFor(() => env.gateway.connections.of('alice').length === 1, 2000, 'one socket of alice left');
    const phone = await connect('alice');
    await waitFor(() => env.gateway.connections.of('alice').length === 2, 2000, 'the phone registered');
    await devices[2].close();
    await waitFor(() => env.gateway.connections.of('alice').length === 1, 2000, 'only the phone left');
    for (const n of [1, 2]) await send(phone, `p${n}`);
    expect(outcome(phone)).toEqual('accepted,accepted');
  });

  it('carries what a user spent over to their next socket: reconnecting is no way around the budget', async () => {
    env = await startGateway({ ratePerSecond: 0.1, rateBurst: 2, userRateFactor: 2, rateCloseAfter: 100 });
    const send = async (client: WsTestClient, id: string) => {
      client.send({ type: 'message', id, to: 'carol', body: id });
      return (await client.next((f) => f.id === id)).type;
    };
    const reconnect = async (client: WsTestClient, left: number) => {
      await client.close();
      await waitFor(() => env.gateway.connections.of('mallory').length === left, 2000, 'the socket gone');
    };
    // One socket at a time: its burst spent, a socket opened again gets none back.
    const first = await connect('mallory');
    expect([await send(first, 'a1'), await send(first, 'a2'), await send(first, 'a3')]).toEqual([
      'accepted',
      'accepted',
      'error',
    ]);
    await reconnect(first, 0);
    const second = await connect('mallory');
    expect(await send(second, 'b1')).toBe('error');

    // One socket kept, another opened again and again: the shared budget (two sockets' worth, 4)
    // is not made anew with each second socket.
    const churn = async (id: string) => {
      const extra = await connect('mallory');
      await waitFor(() => env.gateway.connections.of('mallory').length === 2, 2000, 'a second socket');
      const outcome = [await send(extra, `${id}1`), await send(extra, `${id}2`)];
      await reconnect(extra, 1);
      return outcome;
    };
    expect(await churn('c')).toEqual(['accepted', 'accepted']);
    expect(await churn('d')).toEqual(['accepted', 'accepted']);
    expect(await churn('e')).toEqual(['error', 'error']);
  });

  it("closes a socket for its own refusals in a row, not for those of its user's other sockets on the shared budget", async () => {
    env = await startGateway({ ratePerSecond: 0.001, rateBurst: 2, userRateFactor: 1, rateCloseAfter: 3 });
    const [a, b, c] = [await connect('alice'), await connect('alice'), await connect('alice')];
    await waitFor(() => env.gateway.connections.of('alice').length === 3, 2000, "alice's three sockets");
    const send = async (client: WsTestClient, id: string) => {
      client.send({ type: 'message', id, to: 'carol', body: id });
      return client.next((f) => f.id === id);
    };
    // The shared budget (one socket's worth: 2) is spent by b and c; each keeps a token of its own.
    expect((await send(b, 'b1')).type).toBe('accepted');
    expect((await send(c, 'c1')).type).toBe('accepted');
    expect((await send(b, 'b2')).code).toBe('rate_limited');
    expect((await send(c, 'c2')).code).toBe('rate_limited');
    // a's first frame is refused too (the user is over its budget), but a has not kept going past it.
    expect((await send(a, 'a1')).code).toBe('rate_limited');
    await new Promise((r) => setTimeout(r, 100));
    expect(env.gateway.connections.of('alice').length).toBe(3);
    // Each socket's own run still ends in 4029.
    for (const id of ['a2', 'a3']) a.send({ type: 'message', id, to: 'carol', body: id });
    expect(await a.closed()).toBe(4029);
  });

  it("charges a socket's own budget nothing for a frame its user's shared budget refused", async () => {
    env = await startGateway({ ratePerSecond: 0.001, rateBurst: 2, userRateFactor: 1, rateCloseAfter: 100 });
    const [laptop, phone] = [await connect('alice'), await connect('alice')];
    await waitFor(() => env.gateway.connections.of('alice').length === 2, 2000, "alice's two sockets");
    const send = async (client: WsTestClient, id: string) => {
      client.send({ type: 'message', id, to: 'carol', body: id });
      const answer = await client.next((f) => f.id === id);
      return answer.type === 'error' ? answer.code : answer.type;
    };
    // The laptop spends the shared budget (one socket's worth: 2); the phone's frames are refused by it.
    expect([await send(laptop, 'l1'), await send(laptop, 'l2')]).toEqual(['accepted', 'accepted']);
    expect([await send(phone, 'p1'), await send(phone, 'p2')]).toEqual(['rate_limited', 'rate_limited']);
    // With the laptop gone only the phone's own budget counts, and it is whole: nothing was sent on it.
    await laptop.close();
    await waitFor(() => env.gateway.connections.of('alice').length === 1, 2000, 'the phone alone');
    expect([await send(phone, 'p3'), await send(phone, 'p4')]).toEqual(['accepted', 'accepted']);
  });

  it("answers a ping while its user's frame budget is spent by another device (pings go on the acks' budget)", async () => {
    env = await startGateway({ ratePerSecond: 0.001, rateBurst: 2, userRateFactor: 1, rateCloseAfter: 100 });
    const [laptop, phone] = [await connect('alice'), await connect('alice')];
    await waitFor(() => env.gateway.connections.of('alice').length === 2, 2000, "alice's two sockets");
    for (const id of ['l1', 'l2', 'l3']) laptop.send({ type: 'message', id, to: 'carol', body: id });
    await laptop.next((f) => f.id === 'l3' && f.type === 'error');
    // The phone's keepalive is not refused: a client that misses its pong drops a healthy socket.
    phone.send({ type: 'ping' });
    expect(await phone.next((f) => f.type === 'pong' || f.type === 'error')).toEqual({ type: 'pong' });
  });

  it('closes with 4029 on refused messages in a row even when acks, with a budget of their own, get through', async () => {
    env = await startGateway({ ratePerSecond: 0.1, rateBurst: 2, rateCloseAfter: 3 });
    const alice = await connect('alice');
    for (let i = 0; i < 6; i++) {
      alice.send({ type: 'message', id: `r${i}`, to: 'bob', body: i });
      alice.send({ type: 'ack', mids: [`bob:x${i}`] });
    }
    expect(await alice.closed()).toBe(4029);
    expect(alice.ofType('error').map((f) => f.id)).toEqual(['r2', 'r3', 'r4']);
  });

  it('answers a group frame whose op is a name every object inherits as invalid_frame', async () => {
    env = await startGateway();
    const alice = await connect('alice');
    for (const op of ['constructor', 'toString', '__proto__'])
      alice.send({ type: 'group', id: op, op, group: 'g1', ok: true, value: { type: 'group', op, id: 'x' } });
    await alice.until(() => alice.ofType('error').length === 3);
    expect(alice.ofType('error').map((f) => [f.id, f.code])).toEqual([
      ['constructor', 'invalid_frame'],
      ['toString', 'invalid_frame'],
      ['__proto__', 'invalid_frame'],
    ]);
    expect(alice.ofType('accepted')).toEqual([]);
    expect(env.bus.events(TOPICS.inbound)).toEqual([]);
  });

  it('closes with 1008 at the first frame after the token expired, and takes nothing from it', async () => {
    env = await startGateway();
    const token = await issueToken(DEV_JWT_SECRET, 'alice', 1);
    const alice = await WsTestClient.connect(`ws://127.0.0.1:${env.port}/v1/ws?token=${token}`);
    clients.push(alice);
    await new Promise((r) => setTimeout(r, 2100));
    const reason = new Promise<string>((resolve) =>
      alice.socket.once('close', (_code, r) => resolve(`${r}`)),
    );
    alice.send({ type: 'message', id: 'late', to: 'bob', body: 1 });
    expect(await alice.closed()).toBe(1008);
    expect(await reason).toBe('auth expired');
    expect(alice.ofType('accepted')).toEqual([]);
    expect(env.bus.events(TOPICS.inbound)).toEqual([]);
  });

  it("closes a quiet socket whose token expired with 1008 'auth expired' at the next ping interval; the same token is then refused 401 before the upgrade", async () => {
    // protocol.md: the close's reason is what a browser app can read (a refused upgrade reaches a
    // page as a close 1006, without its status or body), so it takes a new token before reconnecting.
    env = await startGateway({ pingIntervalMs: 200 });
    const token = await issueToken(DEV_JWT_SECRET, 'alice', 2); // 1 s could pass before the upgrade
    const url = `ws://127.0.0.1:${env.port}/v1/ws?token=${token}`;
    const alice = await WsTestClient.connect(url);
    clients.push(alice);
    const reason = new Promise<string>((resolve) =>
      alice.socket.once('close', (_code, r) => resolve(`${r}`)),
    );
    expect(await alice.closed(5000)).toBe(1008);
    expect(await reason).toBe('auth expired');
    const again = await WsTestClient.refusal(url);
    expect([again.status, JSON.parse(again.body).error]).toEqual([
      401,
      { code: 'unauthorized', message: expect.stringMatching(/^token expired at .+: get a new one$/) },
    ]);
  });

  it('counts invalid frames against the rate limit too', async () => {
    env = await startGateway({ ratePerSecond: 0.1, rateBurst: 2, rateCloseAfter: 3 });
    const alice = await connect('alice');
    for (let i = 0; i < 6; i++) alice.send(i % 2 ? '{"type":"nope"}' : 'not json');
    expect(await alice.closed()).toBe(4029);
    expect(alice.ofType('error').map((f) => f.code)).toEqual([
      'invalid_frame',
      'invalid_frame',
      'rate_limited',
      'rate_limited',
      'rate_limited',
    ]);
  });

  it('closes with 1001 (reconnect) a socket whose connect could not be published: delivery would not know it', async () => {
    env = await startGateway();
    await env.bus.close();
    const alice = await connect('alice');
    expect(await alice.closed()).toBe(1001);
  });

  it('refuses frames with unavailable while those waiting for Kafka pass the cap, and takes them again after', async () => {
    env = await startGateway({ maxPendingPublishBytes: 65_536 });
    let release = () => {};
    const publish = env.bus.publish.bind(env.bus);
    env.bus.publish = async (...args: Parameters<typeof publish>) => {
      if (args[0].name === TOPICS.inbound.name) await new Promise<void>((resolve) => (release = resolve));
      return publish(...args);
    };
    const alice = await connect('alice');
    const big = 'x'.repeat(40_000);
    alice.send({ type: 'message', id: 'first', to: 'bob', body: big }); // waits for Kafka
    alice.send({ type: 'message', id: 'second', to: 'bob', body: big }); // past 64 KiB waiting
    const refused = await alice.next((f) => f.type === 'error');
    expect(refused).toMatchObject({ id: 'second', code: 'unavailable' });
    expect(refused.retryAfterMs).toBeGreaterThanOrEqual(1000);
    expect(refused.retryAfterMs).toBeLessThan(2000);
    expect(await env.gateway.internal.inject('/metrics').then((r) => r.body)).toMatch(
      /parley_ws_pending_publish_bytes\{[^}]*\} 4\d{4}/,
    );
    env.bus.publish = publish;
    release();
    expect(await alice.next((f) => f.type === 'accepted')).toMatchObject({ id: 'first' });
    alice.send({ type: 'message', id: 'third', to: 'bob', body: big });
    expect(await alice.next((f) => f.type === 'accepted' && f.id === 'third')).toMatchObject({ id: 'third' });
  });

  it('takes an ack while messages waiting for Kafka fill the cap: a refused ack would be pushed again, then stored', async () => {
    env = await startGateway({ maxPendingPublishBytes: 65_536 });
    const releases: Array<() => void> = [];
    const publish = env.bus.publish.bind(env.bus);
    env.bus.publish = async (...args: Parameters<typeof publish>) => {
      if (args[0].name === TOPICS.inbound.name) await new Promise<void>((resolve) => releases.push(resolve));
      return publish(...args);
    };
    const alice = await connect('alice');
    const big = 'x'.repeat(55_000); // with the 6 KiB counted for it, within 6 KiB of the cap
    alice.send({ type: 'message', id: 'first', to: 'bob', body: big }); // waits for Kafka
    alice.send({ type: 'message', id: 'second', to: 'bob', body: 'hi' }); // past the cap: refused
    expect(await alice.next((f) => f.type === 'error')).toMatchObject({ id: 'second', code: 'unavailable' });
    alice.send({ type: 'ack', mids: ['bob:m1'] });
    alice.send({ type: 'ping' });
    await alice.next((f) => f.type === 'pong');
    env.bus.publish = publish;
    for (const release of releases) release();
    expect(await alice.next((f) => f.type === 'accepted')).toMatchObject({ id: 'first' });
    await waitFor(() => env.bus.events(TOPICS.inbound).some((e) => e.frame.type === 'ack'));
    expect(alice.ofType('error')).toHaveLength(1);
  });

  it('holds no more memory than MAX_PENDING_PUBLISH_BYTES for small frames waiting on a stalled Kafka', async () => {
    // A small frame waiting for Kafka holds far more than its own bytes (its event, record, and the
    // promises and suspended calls up to the producer's queue): counting only the bytes let a
    // sustained overload hold 2.2 GB of heap under the default 64 MiB cap (one-process fleet).
    // Measured in a process of its own: in a Jest worker, earlier suites' leftovers were freed
    // between the two readings (37 MiB in one full run).
    const capBytes = 8 * 1024 * 1024;
    const result = await runFixture('stalled-kafka-heap', { CAP_BYTES: String(capBytes), TOTAL: '10000' });
    expect(result.refusals).toBeGreaterThan(0);
    expect(result.refusalCodes).toEqual(['unavailable']);
    expect(result.held).toBeGreaterThan(0);
    expect(result.heldMiB).toBeLessThan((2 * capBytes) / 2 ** 20);
  }, 60_000);

  it('answers unavailable and claims nothing when Kafka cannot take the frame', async () => {
    env = await startGateway();
    const alice = await connect('alice');
    await env.bus.close();
    alice.send({ type: 'message', id: 'c9', to: 'bob', body: 1 });
    const refused = await alice.next((f) => f.type === 'error');
    expect(refused).toMatchObject({ id: 'c9', code: 'unavailable' });
    expect(refused.retryAfterMs).toBeGreaterThanOrEqual(1000);
    expect(refused.retryAfterMs).toBeLessThan(2000);
    expect(alice.ofType('accepted')).toEqual([]);
  });

  it('writes /send deliveries to every socket of the user, and requires the internal secret', async () => {
    env = await startGateway();
    const phone = await connect('bob', '&deviceId=phone');
    const laptop = await connect('bob', '&deviceId=laptop');
    const frame = {
      type: 'message',
      mid: 'alice:c1',
      id: 'c1',
      from: 'alice',
      to: 'bob',
      chat: 'direct',
      body: 'hi',
      sentAt: 1,
    };
    const payload = {
      deliveries: [
        { to: 'bob', frame },
        { to: 'nobody', frame },
      ],
    };
    const refused = await env.gateway.internal.inject({ method: 'POST', url: '/send', payload });
    expect(refused.statusCode).toBe(403);
    const res = await env.gateway.internal.inject({
      method: 'POST',
      url: '/send',
      payload,
      headers: { [INTERNAL_SECRET_HEADER]: SECRET },
    });
    expect(res.json()).toEqual({ results: [{ written: 2 }, { written: 0 }] });
    for (const device of [phone, laptop])
      expect(await device.next((f) => f.type === 'message')).toEqual(frame);
  });

  it('names the connections asked for that it does not hold', async () => {
    env = await startGateway();
    const phone = await connect('bob', '&deviceId=phone');
    const frame = { type: 'typing', from: 'alice', to: 'bob', chat: 'direct' };
    const res = await env.gateway.internal.inject({
      method: 'POST',
      url: '/send',
      payload: {
        deliveries: [
          { to: 'bob', connIds: [phone.frames[0].connId, 'lost-1'], frame },
          { to: 'nobody', connIds: ['lost-2'], frame },
        ],
      },
      headers: { [INTERNAL_SECRET_HEADER]: SECRET },
    });
    expect(res.json()).toEqual({
      results: [
        { written: 1, missing: ['lost-1'] },
        { written: 0, missing: ['lost-2'] },
      ],
    });
  });

  it('refuses a /send delivery naming more than MAX_DELIVERY_CONN_IDS connections, or one id past MAX_CONN_ID_LENGTH, naming the field', async () => {
    env = await startGateway();
    const frame = { type: 'typing', from: 'alice', to: 'bob', chat: 'direct' };
    const send = (connIds: string[]) =>
      env.gateway.internal.inject({
        method: 'POST',
        url: '/send',
        payload: { deliveries: [{ to: 'bob', connIds, frame }] },
        headers: { [INTERNAL_SECRET_HEADER]: SECRET },
      });
    const ids = (n: number) => Array.from({ length: n }, (_, i) => `conn-${i}`);
    const atLimit = [...ids(MAX_DELIVERY_CONN_IDS - 1), 'x'.repeat(MAX_CONN_ID_LENGTH)];
    expect((await send(atLimit)).json()).toEqual({ results: [{ written: 0, missing: atLimit }] });
    const tooMany = await send(ids(MAX_DELIVERY_CONN_IDS + 1));
    expect([tooMany.statusCode, tooMany.json().error.message]).toEqual([
      400,
      `deliveries[0].connIds: must NOT have more than ${MAX_DELIVERY_CONN_IDS} items`,
    ]);
    const tooLong = await send(['conn-0', 'x'.repeat(MAX_CONN_ID_LENGTH + 1)]);
    expect([tooLong.statusCode, tooLong.json().error.message]).toEqual([
      400,
      `deliveries[0].connIds[1]: must NOT have more than ${MAX_CONN_ID_LENGTH} characters`,
    ]);
  });

  it('writes the frames of one /send batch to a socket in order, and every socket still gets its own', async () => {
    env = await startGateway();
    const alice = await connect('alice');
    const bob = await connect('bob');
    const receipt = (n: number, to: string) => ({
      to,
      frame: { type: 'receipt', mid: `r${n}`, status: 'delivered', mids: [`m${n}`], by: `u${n}`, at: n },
    });
    const deliveries = Array.from({ length: 50 }, (_, n) => receipt(n, n % 5 === 0 ? 'bob' : 'alice'));
    const res = await env.gateway.internal.inject({
      method: 'POST',
      url: '/send',
      payload: { deliveries },
      headers: { [INTERNAL_SECRET_HEADER]: SECRET },
    });
    expect(res.json().results.every((r: { written: number }) => r.written === 1)).toBe(true);
    const mids = (client: WsTestClient, to: string) =>
      client
        .until(() => client.ofType('receipt').length === deliveries.filter((d) => d.to === to).length)
        .then(() => client.ofType('receipt').map((f) => f.mid));
    expect(await mids(alice, 'alice')).toEqual(
      deliveries.filter((d) => d.to === 'alice').map((d) => d.frame.mid),
    );
    expect(await mids(bob, 'bob')).toEqual(deliveries.filter((d) => d.to === 'bob').map((d) => d.frame.mid));
  });

  it('writes a frame shared by index to each delivery naming it, and refuses an index past frames', async () => {
    env = await startGateway();
    const alice = await connect('alice');
    const bob = await connect('bob');
    const group = {
      type: 'message',
      mid: 'carol:g',
      id: 'g',
      from: 'carol',
      to: 'g1',
      chat: 'group',
      body: 1,
      sentAt: 1,
    };
    const inline = { type: 'typing', from: 'carol', to: 'bob', chat: 'direct' };
    const send = (payload: object) =>
      env.gateway.internal.inject({
        method: 'POST',
        url: '/send',
        payload,
        headers: { [INTERNAL_SECRET_HEADER]: SECRET },
      });
    const bad = await send({
      frames: [group],
      deliveries: [
        { to: 'alice', frame: 0 },
        { to: 'bob', frame: 1 },
      ],
    });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.message).toBe('deliveries[1].frame: no frame 1; the request has 1 frames');
    const res = await send({
      frames: [group],
      deliveries: [
        { to: 'alice', frame: 0 },
        { to: 'bob', frame: inline },
        { to: 'bob', frame: 0 },
      ],
    });
    expect(res.json()).toEqual({ results: [{ written: 1 }, { written: 1 }, { written: 1 }] });
    expect(await alice.next((f) => f.type === 'message')).toEqual(group);
    await bob.until(() => bob.frames.length >= 3);
    expect(bob.frames.slice(1)).toEqual([inline, group]); // after hello; nothing from the refused call
    expect(alice.frames.slice(1)).toEqual([group]);
  });

  it('says what is wrong with a malformed /send frame in plain terms, not once per branch of the union', async () => {
    env = await startGateway();
    const message = {
      type: 'message',
      mid: 'a:1',
      id: '1',
      from: 'a',
      to: 'b',
      chat: 'direct',
      body: 1,
      sentAt: 1,
    };
    const { mid: _mid, ...noMid } = message;
    const refusal = async (payload: object) => {
      const res = await env.gateway.internal.inject({
        method: 'POST',
        url: '/send',
        payload,
        headers: { [INTERNAL_SECRET_HEADER]: SECRET },
      });
      return [res.statusCode, res.json().error?.message];
    };
    // The body itself is named `body`, and its fields by their paths, as by every other route.
    expect(await refusal([{ to: 'bob', frame: 0 }])).toEqual([400, 'body: must be object']);
    expect(await refusal({ deliveries: 'bob' })).toEqual([400, 'deliveries: must be array']);
    expect(await refusal({ deliveries: [{ to: 'bob', frame: 'zero' }] })).toEqual([
      400,
      'deliveries[0].frame: must be integer or object',
    ]);
    expect(await refusal({ deliveries: [{ to: 'bob', frame: { type: 'nope' } }] })).toEqual([
      400,
      'deliveries[0].frame.type: must be one of "message", "receipt", "group", "error", "typing"',
    ]);
    expect(await refusal({ frames: [noMid], deliveries: [{ to: 'bob', frame: 0 }] })).toEqual([
      400,
      'frames[0].mid: is required',
    ]);
    expect(await refusal({ deliveries: [{ to: 'bob', frame: { ...message, chat: 'nope' } }] })).toEqual([
      400,
      'deliveries[0].frame.chat: must be one of "direct", "group"',
    ]);
  });

  it('refuses upgrades past maxConnections and admits again once a socket closes', async () => {
    env = await startGateway({ maxConnections: 2 });
    await connect('alice');
    const bob = await connect('bob');
    await expect(connect('carol')).rejects.toThrow(/503/);
    expect(env.gateway.connections.size).toBe(2);
    await bob.close();
    await waitFor(() => env.gateway.connections.size === 1, 5000, 'the close');
    await connect('carol');
    expect(env.gateway.connections.size).toBe(2);
  });

  it("closes a user's socket past maxConnectionsPerUser with 1008 and the reason; others still connect", async () => {
    env = await startGateway({ maxConnectionsPerUser: 2 });
    await connect('alice', '&deviceId=phone');
    const laptop = await connect('alice', '&deviceId=laptop');
    const third = new WebSocket(await env.url('alice', '&deviceId=tablet'));
    const closed = await new Promise<[number, string]>((resolve) =>
      third.once('close', (code, reason) => resolve([code, reason.toString()])),
    );
    expect(closed).toEqual([1008, 'too many connections for this user (at most 2)']);
    await connect('bob');
    expect(env.gateway.connections.of('alice')).toHaveLength(2);
    await laptop.close();
    await waitFor(() => env.gateway.connections.of('alice').length === 1, 5000, 'the close');
    await connect('alice', '&deviceId=tablet');
  });

  it("closes a user's socket opened past their connect budget with 4029 and when to retry; others still connect", async () => {
    env = await startGateway({ connectBurst: 3, connectsPerMinute: 6 });
    for (let i = 0; i < 3; i++) await (await connect('alice')).close();
    const fourth = new WebSocket(await env.url('alice'));
    const closed = await new Promise<[number, string]>((resolve) =>
      fourth.once('close', (code, reason) => resolve([code, reason.toString()])),
    );
    // 6 a minute: a token every 10 s.
    expect(closed[0]).toBe(4029);
    expect(closed[1]).toMatch(/^connecting too often; retry after (9|10) s$/);
    await connect('bob');
    expect(await refusedByStageAndCode(env.gateway)).toEqual({ 'connect rate_limited': 1 });
  });

  it('counts a refused connect and a refused frame of the same code in different series of parley_ws_refused_total', async () => {
    env = await startGateway({ connectBurst: 1, connectsPerMinute: 1, ratePerSecond: 0.1, rateBurst: 1 });
    const alice = await connect('alice');
    const second = new WebSocket(await env.url('alice'));
    expect(await new Promise((resolve) => second.once('close', resolve))).toBe(4029);
    alice.send({ type: 'message', id: 'm1', to: 'bob', body: 1 });
    alice.send({ type: 'message', id: 'm2', to: 'bob', body: 2 });
    expect(await alice.next((f) => f.type === 'error')).toMatchObject({ id: 'm2', code: 'rate_limited' });
    expect(await refusedByStageAndCode(env.gateway)).toEqual({
      'connect rate_limited': 1,
      'frame rate_limited': 1,
    });
  });

  it("spends a user's connect budget only on sockets it opens, not on those refused as one too many or the gateway full", async () => {
    env = await startGateway({
      maxConnections: 2,
      maxConnectionsPerUser: 1,
      connectBurst: 2,
      connectsPerMinute: 1,
    });
    const closeOf = async (user: string) => {
      const socket = new WebSocket(await env.url(user));
      return new Promise<[number, string]>((resolve) =>
        socket.once('close', (code, reason) => resolve([code, reason.toString()])),
      );
    };
    const alice = await connect('alice');
    // One too many for alice, twice: each the 1008 that says to close one first, never a 4029.
    for (let i = 0; i < 2; i++)
      expect(await closeOf('alice')).toEqual([1008, 'too many connections for this user (at most 1)']);
    await alice.close();
    await waitFor(() => env.gateway.connections.of('alice').length === 0, 5000, 'the close');
    await connect('alice'); // as the 1008 said: one closed, the next one opens
    await connect('bob'); // the gateway is full
    const url = await env.url('carol');
    for (let i = 0; i < 2; i++) expect((await WsTestClient.refusal(url)).status).toBe(503);
    await clients.find((c) => c.frames[0]?.user === 'bob')!.close();
    await waitFor(() => env.gateway.connections.size === 1, 5000, "bob's close");
    await connect('carol');
  });

  it('holds to maxConnectionsPerUser when one user opens many sockets at once', async () => {
    env = await startGateway({ maxConnectionsPerUser: 3 });
    const url = await env.url('carol');
    const sockets = Array.from({ length: 10 }, () => new WebSocket(url));
    const outcomes = await Promise.all(
      sockets.map(
        (socket) =>
          new Promise<string>((resolve) => {
            socket.once('message', () => resolve('hello'));
            socket.once('close', (code) => resolve(String(code)));
          }),
      ),
    );
    for (const socket of sockets) socket.terminate();
    expect(outcomes.filter((o) => o === 'hello')).toHaveLength(3);
    expect(outcomes.filter((o) => o === '1008')).toHaveLength(7);
  });

  it('does not cut off a reader that keeps up when one /send batch (a replay on connect) holds more than maxUnsentBytes for it', async () => {
    env = await startGateway(); // maxUnsentBytes 1 MiB; 40 messages of 30 KB in one call
    const bob = await connect('bob');
    const connId = bob.frames[0].connId as string;
    const frames = Array.from({ length: 40 }, (_, n) => ({
      type: 'message',
      mid: `alice:m${n}`,
      id: `m${n}`,
      from: 'alice',
      to: 'bob',
      chat: 'direct',
      body: { text: 'x'.repeat(30_000) },
      sentAt: n,
    }));
    const res = await env.gateway.internal.inject({
      method: 'POST',
      url: '/send',
      payload: { deliveries: frames.map((frame) => ({ to: 'bob', connIds: [connId], frame })) },
      headers: { [INTERNAL_SECRET_HEADER]: SECRET },
    });
    const written = res.json().results.filter((r: { written: number }) => r.written === 1).length;
    await bob.until(() => bob.ofType('message').length === 40 || bob.closeCode !== undefined);
    expect({ written, received: bob.ofType('message').length, closeCode: bob.closeCode }).toEqual({
      written: 40,
      received: 40,
      closeCode: undefined,
    });
  });

  it("names its process's start in its heartbeats and connection events, earlier than any of its connections (session-ms forgets those of an earlier process under its id, and asks a gateway started since its state began for none)", async () => {
    env = await startGateway({ heartbeatIntervalMs: 100 });
    await (await connect('alice')).close();
    const events = () => env.bus.events(TOPICS.connections);
    await waitFor(() => events().some((e) => e.kind === 'connection-down'), 2000, 'the connection-down');
    await waitFor(() => events().some((e) => e.kind === 'gateway-heartbeat'), 2000, 'a heartbeat');
    const up = events().find((e) => e.kind === 'connection-up')!;
    expect(new Set(events().map((e) => e.startedAt)).size).toBe(1);
    const [{ startedAt }] = events();
    if (startedAt === undefined) throw new Error('no start in the heartbeat');
    expect(startedAt).toBeLessThanOrEqual(up.at);
  });

  it('stamps no connection earlier than its start, also after its clock stepped back (session-ms would take the socket for one of an earlier process)', async () => {
    env = await startGateway({ heartbeatIntervalMs: 100 });
    const events = () => env.bus.events(TOPICS.connections);
    await waitFor(() => events().some((e) => e.kind === 'gateway-heartbeat'), 2000, 'a heartbeat');
    const [{ startedAt }] = events();
    if (startedAt === undefined) throw new Error('no start in the heartbeat');
    const realNow = Date.now.bind(Date);
    const clock = jest.spyOn(Date, 'now').mockImplementation(() => realNow() - 60_000); // NTP steps it back
    try {
      await (await connect('alice')).close();
      await waitFor(() => events().some((e) => e.kind === 'connection-down'), 2000, 'the connection-down');
    } finally {
      clock.mockRestore();
    }
    const stamped = events().filter((e) => e.kind !== 'gateway-heartbeat');
    expect(stamped.map((e) => e.kind)).toEqual(['connection-up', 'connection-down']);
    for (const e of stamped) expect(e.at).toBeGreaterThanOrEqual(startedAt);
  });

  it('echoes no id for a frame that has none (an ack with an unchecked extra `id`) when refusing it', async () => {
    env = await startGateway();
    const alice = await connect('alice');
    env.refusing.add('inbound'); // Kafka away: the frame is refused `unavailable`
    alice.send({ type: 'ack', id: { n: 1 }, mids: ['bob:m1'] });
    alice.send({ type: 'message', id: 'c1', to: 'bob', body: { text: 'hi' } });
    const refused = await alice.next((f) => f.type === 'error' && f.code === 'unavailable');
    expect(refused).not.toHaveProperty('id');
    expect(await alice.next((f) => f.type === 'error' && f.id === 'c1')).toMatchObject({
      code: 'unavailable',
    });
  });

  it('publishes a connection-down that Kafka refused (a blip) with the next heartbeat', async () => {
    env = await startGateway({ heartbeatIntervalMs: 100 });
    const alice = await connect('alice');
    const connId = alice.frames[0].connId as string;
    await waitFor(() => env.bus.events(TOPICS.connections).some((e) => e.kind === 'connection-up'));
    env.refusing.add('connection-down');
    await alice.close();
    await waitFor(() => env.gateway.connections.size === 0, 2000, 'the close');
    const held = async () =>
      /^parley_ws_unpublished_disconnects(?:\{[^}]*\})? (\d+)$/m.exec(
        (await env.gateway.internal.inject('/metrics')).body,
      )?.[1];
    await waitFor(async () => (await held()) === '1', 2000, 'the refused disconnect held');
    env.refusing.clear();
    // Lost, session-ms would count alice's phone connected for as long as this gateway beats.
    await waitFor(() => env.bus.events(TOPICS.connections).some((e) => e.kind === 'connection-down'));
    expect(env.bus.events(TOPICS.connections).filter((e) => e.kind === 'connection-down')).toEqual([
      expect.objectContaining({ user: 'alice', connId }),
    ]);
    await waitFor(async () => (await held()) === '0', 2000, 'none held once Kafka took it');
  });

  it('keeps no disconnect to publish again for a connect Kafka never took: reconnects through a Kafka outage do not pile up', async () => {
    env = await startGateway({ heartbeatIntervalMs: 100 });
    // Kafka away: every connect is refused registration (closed 1001) and the client comes back.
    for (const kind of ['connection-up', 'connection-down', 'gateway-heartbeat']) env.refusing.add(kind);
    const reconnects = 40;
    for (let i = 0; i < reconnects; i++) expect(await (await connect(`user${i % 4}`)).closed()).toBe(1001);
    await waitFor(() => env.gateway.connections.size === 0, 2000, 'the closes');
    const beats = () =>
      env.bus.events(TOPICS.connections).filter((e) => e.kind === 'gateway-heartbeat').length;
    const before = beats();
    env.refusing.clear();
    // What the gateway held for the outage goes out with the first heartbeat after it.
    await waitFor(() => beats() > before, 2000, 'a heartbeat after the outage');
    // session-ms never heard of these connections: a disconnect for each was one entry per
    // reconnect held for the whole outage (an hour of a 200,000-socket pod's reconnects).
    expect(env.bus.events(TOPICS.connections).filter((e) => e.kind === 'connection-down')).toHaveLength(0);
  });

  it('publishes nothing after stop() is done when it meets an announce under way: no socket it closed is announced again', async () => {
    env = await startGateway({ announceChunk: 1 });
    const sockets = [await connect('alice'), await connect('bob'), await connect('carol')];
    await waitFor(() => connectionUps(env.bus).length === 3);
    // Kafka slow: each chunk of the announce waits until the test lets it through.
    const publish = env.bus.publish.bind(env.bus);
    const held: Array<() => void> = [];
    let stopped = false;
    const afterStop: string[] = [];
    env.bus.publish = async (...args: Parameters<typeof publish>) => {
      if (args[1].some((e) => (e as { kind?: string }).kind === 'connection-up'))
        await new Promise<void>((resolve) => held.push(resolve));
      if (stopped) afterStop.push(...args[1].map((e) => (e as { kind: string }).kind));
      return publish(...args);
    };
    const asked = await env.gateway.internal.inject({
      method: 'POST',
      url: '/announce',
      payload: {},
      headers: { [INTERNAL_SECRET_HEADER]: SECRET },
    });
    expect(asked.statusCode).toBe(202);
    await waitFor(() => held.length === 1, 2000, 'the first chunk on its way');
    const stopping = env.gateway.stop().then(() => (stopped = true));
    await Promise.all(sockets.map((s) => s.closed()));
    // One a tenth of a second: slower than the rest of stop(), as a Kafka slow to answer is.
    const letThrough = setInterval(() => held.splice(0).forEach((resolve) => resolve()), 100);
    try {
      await stopping;
      await sleep(300);
    } finally {
      clearInterval(letThrough);
      held.splice(0).forEach((resolve) => resolve());
    }
    // Published after stop, an up would name a socket gone with this pod until the TTL forgot it.
    expect(afterStop).toEqual([]);
    const last = new Map<string, string>();
    for (const e of env.bus.events(TOPICS.connections))
      if (e.kind !== 'gateway-heartbeat') last.set(e.connId, e.kind);
    expect([...last.values()]).toEqual(['connection-down', 'connection-down', 'connection-down']);
  });

  it('keeps one heartbeat publish under way while Kafka hangs: the disconnects it holds are not queued again every beat', async () => {
    env = await startGateway({ heartbeatIntervalMs: 20 });
    const alice = await connect('alice');
    await waitFor(() => env.bus.events(TOPICS.connections).some((e) => e.kind === 'connection-up'));
    env.refusing.add('connection-down');
    await alice.close();
    await waitFor(() => env.gateway.connections.size === 0, 2000, 'the close');
    env.refusing.clear();
    // Kafka takes requests and answers none (a broker hung, a partition without a leader): each
    // publish waits for kafkajs's request timeout and retries, minutes in all.
    const publish = env.bus.publish.bind(env.bus);
    const hung: Array<() => void> = [];
    env.bus.publish = async (...args: Parameters<typeof publish>) => {
      if (args[1].some((e) => (e as { kind?: string }).kind === 'gateway-heartbeat'))
        await new Promise<void>((resolve) => hung.push(resolve));
      return publish(...args);
    };
    await sleep(400); // some twenty heartbeat intervals
    const waiting = hung.length;
    env.bus.publish = publish;
    hung.forEach((resolve) => resolve());
    // One beat per interval was one more copy of every disconnect held (up to MAX_CONNECTIONS of
    // them) queued behind the hung request, for as long as Kafka hung.
    expect(waiting).toBe(1);
    await waitFor(
      () => env.bus.events(TOPICS.connections).some((e) => e.kind === 'connection-down'),
      2000,
      'the disconnect',
    );
    await sleep(100);
    expect(env.bus.events(TOPICS.connections).filter((e) => e.kind === 'connection-down')).toHaveLength(1);
  });

  it('announces every open connection again when asked (session-ms lost them), retrying with the heartbeat', async () => {
    env = await startGateway({ heartbeatIntervalMs: 100 });
    const sockets = [await connect('alice'), await connect('alice'), await connect('bob')];
    const connIds = sockets.map((s) => s.frames[0].connId as string).sort();
    const ups = () => connectionUps(env.bus);
    await waitFor(() => ups().length === 3);
    const announce = (headers: Record<string, string>) =>
      env.gateway.internal.inject({ method: 'POST', url: '/announce', payload: {}, headers });
    expect((await announce({})).statusCode).toBe(403);
    // It takes no body: one of more than a kilobyte is refused unread (it was parsed up to /send's limit).
    const bloated = await env.gateway.internal.inject({
      method: 'POST',
      url: '/announce',
      payload: { padding: 'x'.repeat(4096) },
      headers: { [INTERNAL_SECRET_HEADER]: SECRET },
    });
    expect([bloated.statusCode, bloated.json().error.code]).toEqual([413, 'too_large']);
    env.refusing.add('connection-up'); // the first try meets a Kafka blip
    const asked = await announce({ [INTERNAL_SECRET_HEADER]: SECRET });
    expect([asked.statusCode, asked.json()]).toEqual([202, { connections: 3 }]);
    await sleep(50);
    expect(ups()).toHaveLength(3);
    env.refusing.clear();
    await waitFor(() => ups().length === 6, 2000, 'the announcement with a heartbeat');
    expect(ups().slice(3).sort()).toEqual(connIds);
    await sleep(250); // announced once, not with every heartbeat
    expect(ups()).toHaveLength(6);
  });

  it('starts an announce under way over when asked again: what it published before the second ask is published again', async () => {
    env = await startGateway({ announceChunk: 1 });
    const sockets = [await connect('alice'), await connect('bob'), await connect('carol')];
    const ups = () => connectionUps(env.bus);
    await waitFor(() => ups().length === 3);
    // Kafka slow: each chunk of the announce waits until the test lets it through.
    const publish = env.bus.publish.bind(env.bus);
    const held: Array<() => void> = [];
    env.bus.publish = async (...args: Parameters<typeof publish>) => {
      if (args[1].some((e) => (e as { kind?: string }).kind === 'connection-up'))
        await new Promise<void>((resolve) => held.push(resolve));
      return publish(...args);
    };
    const announce = () =>
      env.gateway.internal.inject({
        method: 'POST',
        url: '/announce',
        payload: {},
        headers: { [INTERNAL_SECRET_HEADER]: SECRET },
      });
    expect((await announce()).statusCode).toBe(202);
    await waitFor(() => held.length === 1, 2000, 'the first chunk on its way');
    held.shift()!();
    await waitFor(() => ups().length === 4 && held.length === 1, 2000, 'the second chunk on its way');
    // session-ms's store lost its state again: the first connection's up, published, is gone there.
    expect((await announce()).statusCode).toBe(202);
    const letThrough = setInterval(() => held.splice(0).forEach((resolve) => resolve()), 10);
    try {
      await waitFor(() => ups().length >= 8, 2000, 'every connection published since the second ask');
      await sleep(100);
    } finally {
      clearInterval(letThrough);
    }
    const sinceSecondAsk = ups().slice(4);
    const connIds = sockets.map((s) => s.frames[0].connId as string);
    expect(new Set(sinceSecondAsk)).toEqual(new Set(connIds));
    // Started over at the chunk boundary, not after the whole first run: the chunk on its way when
    // asked is the only one published twice.
    expect(sinceSecondAsk).toHaveLength(4);
  });

  it('does not admit a socket whose token was still being checked when stop began', async () => {
    const verify = createTokenVerifier({ JWT_SECRET: DEV_JWT_SECRET });
    let slow = false;
    let checking: (() => void) | undefined;
    // A JWKS verifier fetching a rotated key, say: the check takes a while.
    env = await startGateway({}, async (token) => {
      if (slow) await new Promise<void>((resolve) => (checking = resolve));
      return verify(token);
    });
    const alice = await connect('alice');
    slow = true;
    const late = new WebSocket(await env.url('bob'));
    const outcome = new Promise<string>((resolve) => {
      late.once('open', () => resolve('open'));
      late.once('unexpected-response', (_req, res) => resolve(`refused ${res.statusCode}`));
      late.once('error', (err) => resolve(`error: ${err.message}`));
    });
    await waitFor(() => checking !== undefined, 2000, 'the token check');
    const stopping = env.gateway.stop();
    await alice.closed();
    checking!();
    expect(await outcome).toBe('refused 503');
    await stopping;
    const kinds = env.bus
      .events(TOPICS.connections)
      .filter((e) => e.kind !== 'gateway-heartbeat')
      .map((e) => `${e.kind} ${(e as { user: string }).user}`);
    expect(kinds).toEqual(['connection-up alice', 'connection-down alice']); // nothing of bob's
    late.terminate();
  });

  it('writes nothing past the unsent cap to a reader behind it, and cuts off one that stopped reading', async () => {
    env = await startGateway({ maxUnsentBytes: 2048 });
    const bob = await connect('bob');
    const conn = [...env.gateway.connections.all()][0];
    conn.unsentBytes = 2000; // as if the kernel buffer were full and sends had not completed
    const frame = { type: 'typing', from: 'alice', to: 'bob', chat: 'direct', pad: 'x'.repeat(100) };
    const push = async () =>
      (
        await env.gateway.internal.inject({
          method: 'POST',
          url: '/send',
          payload: { deliveries: [{ to: 'bob', frame }] },
          headers: { [INTERNAL_SECRET_HEADER]: SECRET },
        })
      ).json();
    // Behind, but its writes drained moments ago: it still reads (session-ms pushes again later).
    expect(await push()).toEqual({ results: [{ written: 0 }] });
    // What answers its own frames still goes: an app missing its pong would drop the socket.
    bob.send({ type: 'ping' });
    expect(await bob.next((f) => f.type === 'pong')).toEqual({ type: 'pong' });
    expect(bob.ofType('typing')).toEqual([]);
    expect(bob.closeCode).toBeUndefined();
    conn.drainedAt -= STALLED_READER_MS; // nothing it was sent has drained for that long
    expect(await push()).toEqual({ results: [{ written: 0 }] });
    expect(await bob.closed()).toBe(1006);
  });

  it('closes sockets with 1001 on shutdown and publishes the disconnects', async () => {
    const gateway = { gateway: 'gw-7', gatewayUrl: 'http://10.0.0.7:9080' };
    env = await startGateway({ gatewayId: gateway.gateway, internalUrl: gateway.gatewayUrl });
    const alice = await connect('alice', '&deviceId=phone');
    const { connId } = alice.frames[0];
    const stopped = env.gateway.stop();
    // Pushes meanwhile are refused (session-ms pushes again later, wherever the device reconnects),
    // not answered as written to nobody, with every connection named missing.
    const push = await env.gateway.internal.inject({
      method: 'POST',
      url: '/send',
      payload: {
        deliveries: [
          {
            to: 'alice',
            connIds: [connId],
            frame: { type: 'typing', from: 'bob', to: 'alice', chat: 'direct' },
          },
        ],
      },
      headers: { [INTERNAL_SECRET_HEADER]: SECRET },
    });
    expect([push.statusCode, push.json().error]).toEqual([
      503,
      { code: 'unavailable', message: 'this gateway is shutting down' },
    ]);
    await stopped;
    expect(await alice.closed()).toBe(1001);
    const connection = {
      v: 1,
      user: 'alice',
      connId,
      deviceId: 'phone',
      ...gateway,
      at: expect.any(Number),
      startedAt: expect.any(Number),
    };
    expect(connId).toEqual(expect.any(String));
    expect(env.bus.events(TOPICS.connections)).toEqual([
      {
        v: 1,
        kind: 'gateway-heartbeat',
        ...gateway,
        connections: 0,
        at: expect.any(Number),
        startedAt: expect.any(Number),
      },
      { kind: 'connection-up', ...connection },
      { kind: 'connection-down', ...connection },
    ]);
    env = await startGateway(); // afterEach stops this one
  });

  it('stops without waiting on a socket it closed at the upgrade whose client never answers the close (a phone gone dark)', async () => {
    env = await startGateway({ maxConnectionsPerUser: 1 });
    await connect('alice');
    const token = await issueToken(DEV_JWT_SECRET, 'alice');
    // Upgraded, then closed 1008 as one socket too many: no connection, and the client stays silent.
    const refused = await rawUpgrade(env.port, `/v1/ws?token=${token}`);
    await waitFor(() => refused.answer().includes('too many connections'), 5000, 'the 1008');
    const stopping = env.gateway.stop();
    // SHUTDOWN_TIMEOUT_MS is 25 s: ws gives up on an unanswered close only after 30 s.
    const outcome = await Promise.race([
      stopping.then(() => 'stopped'),
      sleep(5000).then(() => 'still stopping'),
    ]);
    refused.socket.destroy();
    await stopping;
    expect(outcome).toBe('stopped');
    env = await startGateway(); // afterEach stops this one
  });

  it('stops without waiting on a client that sent half an upgrade request and went silent', async () => {
    env = await startGateway();
    const { socket } = await rawRequest(
      env.port,
      'GET /v1/ws HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\n',
    );
    await sleep(50); // read by the server
    const stopping = env.gateway.stop();
    // Node times requests out (requestTimeout) only while its server is open: this one, never.
    const outcome = await Promise.race([
      stopping.then(() => 'stopped'),
      sleep(5000).then(() => 'still stopping'),
    ]);
    socket.destroy();
    await stopping;
    expect(outcome).toBe('stopped');
    env = await startGateway(); // afterEach stops this one
  });

  it('publishes again at stop a disconnect of its own closes that Kafka refused after a while (a blip)', async () => {
    env = await startGateway();
    const alice = await connect('alice');
    const connId = alice.frames[0].connId as string;
    await waitFor(() => env.bus.events(TOPICS.connections).some((e) => e.kind === 'connection-up'));
    // The first produce of the disconnect times out (a partition leader moving, say); the next works.
    const publish = env.bus.publish.bind(env.bus);
    let failed = false;
    env.bus.publish = async (...args: Parameters<typeof publish>) => {
      if (!failed && args[1].some((e) => (e as { kind?: string }).kind === 'connection-down')) {
        failed = true;
        await sleep(200);
        throw new TransientError('request timed out');
      }
      return publish(...args);
    };
    await env.gateway.stop();
    expect(failed).toBe(true);
    // Lost, session-ms would count alice's socket connected until it forgets this gateway.
    expect(env.bus.events(TOPICS.connections).filter((e) => e.kind === 'connection-down')).toEqual([
      expect.objectContaining({ user: 'alice', connId }),
    ]);
    env = await startGateway(); // afterEach stops this one
  });

  it('reports not ready on its probe port until its public port listens', async () => {
    // The probes are on the internal port, which listens first: ready before the WebSocket port
    // listens, a pod would get clients it refuses (the first heartbeat waits for Kafka meanwhile).
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    class HeldBus extends MemoryBus {
      override async publish<T>(topic: TopicSpec<T>, events: T[], options?: { traceId?: string }) {
        if (events.some((e) => (e as { kind?: string }).kind === 'gateway-heartbeat')) await held;
        return super.publish(topic, events, options);
      }
    }
    const readiness = new Readiness();
    const gateway = createWsGateway({
      bus: new HeldBus(),
      logger: silentLogger(),
      metrics: createMetricsRegistry('ws-gateway', { collectDefaults: false }),
      readiness,
      verifyToken: createTokenVerifier({ JWT_SECRET: DEV_JWT_SECRET }),
      internalSecret: SECRET,
      port: 0,
      internalPort: 0,
      host: '127.0.0.1',
      settings: { ...TEST_SETTINGS, gatewayId: 'gw-ready' },
    });
    const starting = gateway.start();
    try {
      await waitFor(() => gateway.internal.server.listening, 2000, 'the internal port');
      expect(gateway.http.server.listening).toBe(false);
      const early = await gateway.internal.inject('/readyz');
      expect([early.statusCode, early.json().checks.startup]).toEqual([503, expect.any(String)]);
      release();
      await starting;
      expect((await gateway.internal.inject('/readyz')).statusCode).toBe(200);
    } finally {
      release();
      await starting.catch(() => undefined);
      await gateway.stop();
    }
  });

  it('keeps a client that answers pings connected across several ping intervals', async () => {
    // 500 ms: the pong is read in this process too, and a pause of it (a busy box) longer than an
    // interval after a ping would have the next sweep find no pong.
    env = await startGateway({ pingIntervalMs: 500 });
    const alice = await connect('alice');
    let pings = 0;
    alice.socket.on('ping', () => pings++);
    await waitFor(() => pings >= 4 || alice.closeCode !== undefined, 5000, 'four pings');
    expect(alice.closeCode).toBeUndefined();
    expect(env.gateway.connections.of('alice')).toHaveLength(1);
  });

  it('terminates a client that does not answer a ping by the next one, and publishes its disconnect', async () => {
    env = await startGateway({ pingIntervalMs: 200 });
    const dead = await connect('alice', '&deviceId=phone', { autoPong: false });
    let pings = 0;
    dead.socket.on('ping', () => pings++);
    expect(await dead.closed()).toBe(1006); // terminated: no close frame
    expect(pings).toBe(1);
    await waitFor(
      () => env.bus.events(TOPICS.connections).some((e) => e.kind === 'connection-down'),
      2000,
      'the disconnect',
    );
    expect(env.gateway.connections.size).toBe(0);
    expect(env.bus.events(TOPICS.connections).find((e) => e.kind === 'connection-down')).toMatchObject({
      user: 'alice',
      deviceId: 'phone',
      connId: dead.frames[0].connId,
    });
  });
});

describe('the internal URL a gateway advertises', () => {
  const base = { HOST: '0.0.0.0', INTERNAL_PORT: 9080 };
  const interfaces = {
    lo: [{ address: '127.0.0.1', family: 'IPv4', internal: true }],
    eth0: [
      { address: 'fe80::1', family: 'IPv6', internal: false },
      { address: '10.1.2.3', family: 'IPv4', internal: false },
    ],
  } as unknown as Parameters<typeof advertisedInternalUrl>[1];

  it('is GATEWAY_INTERNAL_URL when set', () => {
    const config = { ...base, GATEWAY_INTERNAL_URL: 'http://gw-0.gw:9080', POD_IP: '10.0.0.9' };
    expect(advertisedInternalUrl(config, interfaces)).toBe('http://gw-0.gw:9080');
  });

  it("is the pod's IP, an IPv6 one in brackets (an IPv6-only cluster)", () => {
    expect(advertisedInternalUrl({ ...base, POD_IP: '10.0.0.9' }, interfaces)).toBe('http://10.0.0.9:9080');
    expect(advertisedInternalUrl({ ...base, POD_IP: 'fd00:10:244::5' }, interfaces)).toBe(
      'http://[fd00:10:244::5]:9080',
    );
  });

  it('is the address the internal server listens on when it is one, else the first non-loopback IPv4', () => {
    expect(advertisedInternalUrl({ ...base, HOST: '::1' }, interfaces)).toBe('http://[::1]:9080');
    expect(advertisedInternalUrl(base, interfaces)).toBe('http://10.1.2.3:9080');
    expect(advertisedInternalUrl({ ...base, HOST: '::' }, {})).toBe('http://127.0.0.1:9080');
  });
});

/** An upgrade request written by hand on a raw socket (then `after`, as a first frame sent with it). */
/** The connection ids of the connection-ups the gateway published, in order. */
function connectionUps(bus: MemoryBus): string[] {
  return bus
    .events(TOPICS.connections)
    .filter((e) => e.kind === 'connection-up')
    .map((e) => (e as { connId: string }).connId);
}

async function rawUpgrade(port: number, target: string, after = '') {
  return rawRequest(
    port,
    `GET ${target} HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${Buffer.alloc(16, 1).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n${after}`,
  );
}

/** The gateway's parley_ws_refused_total, by `<stage> <code>`. */
async function refusedByStageAndCode(gateway: Awaited<ReturnType<typeof startGateway>>['gateway']) {
  const text = (await gateway.internal.inject('/metrics')).body;
  const counts: Record<string, number> = {};
  for (const [, labels, n] of text.matchAll(/^parley_ws_refused_total\{([^}]*)\} (\d+)$/gm)) {
    const label = (name: string) => new RegExp(`(?:^|,)${name}="([^"]*)"`).exec(labels!)?.[1];
    counts[`${label('stage')} ${label('code')}`] = Number(n);
  }
  return counts;
}

/** Writes `request` as it is on a fresh connection; `answer()` is what came back so far. */
async function rawRequest(port: number, request: string) {
  const socket = net.connect(port, '127.0.0.1');
  let answer = '';
  socket.on('data', (chunk: Buffer) => (answer += chunk.toString()));
  socket.on('error', () => undefined);
  const closed = new Promise((resolve) => socket.once('close', resolve));
  await new Promise((resolve) => socket.once('connect', resolve));
  socket.write(request);
  return { socket, answer: () => answer, closed };
}

/** Runs `test/fixtures/<name>.ts` in a Node process of its own (with --expose-gc) and parses the JSON line it prints. */
async function runFixture(
  name: string,
  env: Record<string, string>,
): Promise<Record<string, unknown> & { heldMiB: number }> {
  const fixture = path.join(__dirname, 'fixtures', `${name}.ts`);
  const { stdout } = await execFileAsync(process.execPath, ['--expose-gc', '--import', 'tsx', fixture], {
    env: { ...process.env, NODE_OPTIONS: '', ...env },
    timeout: 50_000,
  });
  return JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, unknown> & { heldMiB: number };
}
