import { createServer, IncomingMessage, request, Server } from 'node:http';
import { AddressInfo, Socket } from 'node:net';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';
import { Registry } from 'prom-client';
import {
  INTERNAL_SECRET_HEADER,
  INTERNAL_USER_HEADER,
  SendResult,
  TOPICS,
  TopicSpec,
} from '@parley/contracts';
import { MemoryBus } from '@parley/kafka';
import {
  buildHttpServer,
  createMetricsRegistry,
  createTokenVerifier,
  DEV_JWT_SECRET,
  type DevTokenClaims,
  issueToken,
  Readiness,
  requireInternalSecret,
  silentLogger,
} from '@parley/service-kit';
import { waitFor } from '@parley/test-kit';
import { webClientPlugin } from '../../web-client/src/plugin';
import { createRestGateway, RestGateway, RestGatewayDeps } from '../src/app';
import { createHttpUpstreams, UpstreamLimits, UpstreamName } from '../src/upstream';

/** A stand-in for the internal APIs: answers like group-ms would, and records who asked. */
async function startUpstream(
  answer: (
    req: IncomingMessage,
    body: string,
  ) => { status: number; body?: unknown; raw?: string; headers?: Record<string, string> },
) {
  const seen: Array<{ method?: string; url?: string; user?: string; secret?: string; body: string }> = [];
  const server: Server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      seen.push({
        method: req.method,
        url: req.url,
        user: req.headers[INTERNAL_USER_HEADER] as string,
        secret: req.headers[INTERNAL_SECRET_HEADER] as string,
        body,
      });
      const out = answer(req, body);
      res
        .writeHead(out.status, { 'content-type': 'application/json', ...out.headers })
        .end(out.raw ?? (out.body === undefined ? '' : JSON.stringify(out.body)));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () => new Promise((r) => server.close(r)),
  };
}

interface BuildOptions {
  devMode?: boolean;
  rateLimitPerMinute?: number;
  /** Every upstream at this URL (default: nothing listens). */
  upstreamUrl?: string;
  /** Some upstreams elsewhere. */
  upstreamUrls?: Partial<Record<UpstreamName, string>>;
  corsOrigins?: string[];
  bus?: MemoryBus;
  maxPendingPublishBytes?: number;
  sendFramesPerSecond?: number;
  sendFramesBurst?: number;
  plugins?: RestGatewayDeps['plugins'];
  /** UPSTREAM_MAX_IN_FLIGHT and the wait past it (default 64, as many waiting). */
  upstreamLimits?: Omit<UpstreamLimits, 'metrics'>;
  /** JWT_ISSUER and JWT_AUDIENCE, checked by the gateway and put in its dev tokens. */
  tokenClaims?: DevTokenClaims;
}

function build(options: BuildOptions = {}) {
  const bus = options.bus ?? new MemoryBus();
  const url = options.upstreamUrl ?? 'http://127.0.0.1:1';
  const urls = {
    'persistence-ms': url,
    'group-ms': url,
    'push-ms': url,
    'session-ms': url,
    ...options.upstreamUrls,
  };
  const metrics = createMetricsRegistry('rest-gateway', { collectDefaults: false });
  const limits = { metrics, maxInFlight: 64, timeoutMs: 2000, ...options.upstreamLimits };
  const gateway = createRestGateway({
    bus,
    logger: silentLogger(),
    metrics,
    readiness: new Readiness(),
    verifyToken: createTokenVerifier({
      JWT_SECRET: DEV_JWT_SECRET,
      JWT_ISSUER: options.tokenClaims?.issuer,
      JWT_AUDIENCE: options.tokenClaims?.audience,
    }),
    upstreams: createHttpUpstreams(urls, 'secret-for-internal-calls', limits),
    port: 0,
    settings: {
      devMode: options.devMode ?? false,
      devToken: { secret: DEV_JWT_SECRET, ...options.tokenClaims },
      corsOrigins: options.corsOrigins ?? [],
      rateLimitPerMinute: options.rateLimitPerMinute ?? 1000,
      maxFrameBytes: 1024,
      maxPendingPublishBytes: options.maxPendingPublishBytes,
      sendFramesPerSecond: options.sendFramesPerSecond,
      sendFramesBurst: options.sendFramesBurst,
    },
    plugins: options.plugins,
  });
  return { bus, gateway, metrics };
}

const auth = async (user = 'alice') => ({
  authorization: `Bearer ${await issueToken(DEV_JWT_SECRET, user)}`,
});

/** A bus whose publishes wait until `release()`: Kafka slow to answer. */
function slowKafka() {
  let release!: () => void;
  const kafkaSlow = new Promise<void>((resolve) => (release = resolve));
  class SlowBus extends MemoryBus {
    override async publish<T>(topic: TopicSpec<T>, events: T[]) {
      await kafkaSlow;
      return super.publish(topic, events);
    }
  }
  return { bus: new SlowBus(), release };
}

/** The OpenAPI document the gateway serves at /docs/json. */
type OpenApiDocument = {
  paths: Record<string, Record<string, OpenApiOperation>>;
};
type OpenApiOperation = {
  operationId?: string;
  security?: unknown[];
  parameters?: Array<{ name: string; schema: object }>;
  responses: Record<
    string,
    { content?: Record<string, { schema: object }>; headers?: Record<string, { schema: object }> }
  >;
};

const documentReader = addFormats(new Ajv({ strict: false }));

/**
 * A schema of the document as a typed client generated from it reads values: an integer without a
 * format is 32 bits there (Java and Kotlin `Integer`, C# `int`, Go `int32`).
 */
function asGeneratedClientReads(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(asGeneratedClientReads);
  if (schema === null || typeof schema !== 'object') return schema;
  const copy = Object.fromEntries(
    Object.entries(schema).map(([key, value]) => [key, asGeneratedClientReads(value)]),
  );
  return copy.type === 'integer' && copy.format === undefined ? { ...copy, format: 'int32' } : copy;
}

/** What a generated client would refuse in `value`, read by the document's `schema` (none: []). */
function refusedByGeneratedClient(schema: object, value: unknown): string[] {
  const check = documentReader.compile(asGeneratedClientReads(schema) as object);
  return check(value) ? [] : (check.errors ?? []).map((e) => `${e.instancePath} ${e.message}`);
}

/** The documented body schema of `method path`'s answer with `status`. */
function documentedAnswer(doc: OpenApiDocument, method: string, path: string, status: number): object {
  const schema = doc.paths[path]?.[method]?.responses[String(status)]?.content?.['application/json']?.schema;
  if (!schema) throw new Error(`${method} ${path} documents no ${status} body`);
  return schema;
}

describe('rest-gateway', () => {
  let gateway: RestGateway;
  /** `POST /v1/send` with `payload` (a frame, or an array of them), as `user`. */
  const send = async (payload: object, user?: string) =>
    gateway.http.inject({ method: 'POST', url: '/v1/send', headers: await auth(user), payload });
  afterEach(() => gateway?.http.close());

  it('refuses a missing or bad token with 401 and the protocol error body', async () => {
    ({ gateway } = build());
    for (const headers of [
      {},
      { authorization: 'Bearer nope' },
      await auth('a b').catch(() => ({ authorization: 'Bearer x' })),
    ]) {
      const res = await gateway.http.inject({
        method: 'POST',
        url: '/v1/send',
        payload: { type: 'ack', mids: ['x:1'] },
        headers,
      });
      expect(res.statusCode).toBe(401);
      expect(res.json()).toEqual({ error: { code: 'unauthorized', message: expect.any(String) } });
    }
  });

  it('accepts a frame once Kafka has it, stamping the authenticated sender; a resend gets the same mid', async () => {
    let bus: MemoryBus;
    ({ gateway, bus } = build());
    const frame = { type: 'message', id: 'c1', to: 'bob', body: { text: 'hi' }, from: 'mallory' };
    const first = await send(frame);
    const again = await send([frame]);
    expect(first.json()).toEqual({ results: [{ index: 0, status: 'accepted', id: 'c1', mid: 'alice:c1' }] });
    expect(again.json()).toEqual(first.json());
    const events = bus.events(TOPICS.inbound);
    expect(events.map((e) => [e.from, e.frame.type])).toEqual([
      ['alice', 'message'],
      ['alice', 'message'],
    ]);
  });

  it('takes any JSON in a message body, __proto__ and constructor keys too, as data (as the WebSocket does), after a byte-order mark too', async () => {
    const { gateway: built, bus } = build();
    gateway = built;
    const res = await gateway.http.inject({
      method: 'POST',
      url: '/v1/send',
      headers: { ...(await auth()), 'content-type': 'application/json' },
      payload:
        '{"type":"message","id":"p1","to":"bob","body":{"__proto__":{"a":1},"constructor":{"prototype":{"b":2}}}}',
    });
    expect([res.statusCode, res.json().results[0].status]).toEqual([200, 'accepted']);
    const [event] = bus.events(TOPICS.inbound);
    expect(JSON.stringify(event.frame.type === 'message' && event.frame.body)).toBe(
      '{"__proto__":{"a":1},"constructor":{"prototype":{"b":2}}}',
    );
    expect(({} as Record<string, unknown>).a).toBeUndefined();
    const withBom = await gateway.http.inject({
      method: 'POST',
      url: '/v1/send',
      headers: { ...(await auth()), 'content-type': 'application/json; charset=utf-8' },
      payload: '\uFEFF{"type":"ack","mids":["bob:1"]}',
    });
    expect([withBom.statusCode, withBom.json().results]).toEqual([200, [{ index: 0, status: 'accepted' }]]);
  });

  it('answers a mixed batch per frame, in order', async () => {
    ({ gateway } = build());
    const res = await send([
      { type: 'message', id: 'ok1', to: 'bob', body: 1 },
      { type: 'message', id: 'bad', to: 'b b', body: 1 },
      { type: 'typing', to: 'bob' },
      { type: 'ack', mids: ['bob:1'] },
      { type: 'message', id: 'big', to: 'bob', body: 'x'.repeat(2000) },
      { type: 'group', id: 'proto', op: 'toString', group: 'g1' },
      { type: 'read', to: 'bob', mids: ['bob:1'] },
      { type: 'read', id: 'r1', to: 'bob', mids: ['bob:1'] },
    ]);
    expect(res.statusCode).toBe(200);
    expect(res.json().results).toEqual([
      { index: 0, status: 'accepted', id: 'ok1', mid: 'alice:ok1' },
      {
        index: 1,
        status: 'rejected',
        id: 'bad',
        code: 'invalid_frame',
        message: 'to: must match ^[A-Za-z0-9_.-]{1,64}$',
      },
      {
        index: 2,
        status: 'rejected',
        code: 'invalid_frame',
        message: 'type: must be one of message, ack, read, group',
      },
      { index: 3, status: 'accepted' },
      {
        index: 4,
        status: 'rejected',
        id: 'big',
        code: 'too_large',
        message: expect.stringContaining('at most 1024 bytes'),
      },
      {
        index: 5,
        status: 'rejected',
        id: 'proto',
        code: 'invalid_frame',
        message: expect.stringContaining('op: must be one of'),
      },
      { index: 6, status: 'accepted' },
      { index: 7, status: 'accepted', id: 'r1', mid: 'alice:r1' },
    ]);
  });

  it('names in a rejected result the id the frame had, an empty one too, as the WebSocket error frame does', async () => {
    ({ gateway } = build());
    const res = await send([
      { type: 'message', id: '', to: 'bob', body: 1 },
      { type: 'message', id: '', to: 'bob', body: 'x'.repeat(2000) },
    ]);
    expect(res.json().results).toEqual([
      {
        index: 0,
        status: 'rejected',
        id: '',
        code: 'invalid_frame',
        message: 'id: must match ^[A-Za-z0-9_-]{1,64}$',
      },
      {
        index: 1,
        status: 'rejected',
        id: '',
        code: 'too_large',
        message: expect.stringContaining('at most 1024 bytes'),
      },
    ]);
  });

  it('answers an ack carrying an id (an ack has none) accepted with no mid, as the WebSocket answers it nothing', async () => {
    let bus: MemoryBus;
    ({ gateway, bus } = build());
    const res = await send([
      { type: 'message', id: 'm1', to: 'bob', body: 1 },
      { type: 'ack', id: 'a1', mids: ['bob:1'] },
      { type: 'ack', id: 5, mids: ['bob:2'] },
      { type: 'ack', id: { n: 1 }, mids: ['bob:3'] },
    ]);
    expect([res.statusCode, res.json().results]).toEqual([
      200,
      [
        { index: 0, status: 'accepted', id: 'm1', mid: 'alice:m1' },
        { index: 1, status: 'accepted' },
        { index: 2, status: 'accepted' },
        { index: 3, status: 'accepted' },
      ],
    ]);
    expect(bus.events(TOPICS.inbound)).toHaveLength(4);
  });

  it('rejects an ack naming a mid with a NUL or a lone surrogate (storage cannot hold it), accepting the rest', async () => {
    let bus: MemoryBus;
    ({ gateway, bus } = build());
    const res = await send([
      { type: 'ack', mids: ['bob:c1\u0000'] },
      { type: 'ack', mids: ['bob:\udc00'] },
      { type: 'ack', mids: ['bob:c1'] },
    ]);
    expect(res.json().results).toEqual([
      {
        index: 0,
        status: 'rejected',
        code: 'invalid_frame',
        message: expect.stringMatching(/^mids\[0\]: must match/),
      },
      {
        index: 1,
        status: 'rejected',
        code: 'invalid_frame',
        message: expect.stringMatching(/^mids\[0\]: must match/),
      },
      { index: 2, status: 'accepted' },
    ]);
    expect(bus.events(TOPICS.inbound).map((e) => e.frame)).toEqual([{ type: 'ack', mids: ['bob:c1'] }]);
  });

  it('refuses a frame nested far too deep as invalid, without overflowing the stack', async () => {
    ({ gateway } = build());
    const res = await gateway.http.inject({
      method: 'POST',
      url: '/v1/send',
      headers: { ...(await auth()), 'content-type': 'application/json' },
      payload:
        '{"type":"message","id":"d1","to":"bob","body":' + '['.repeat(100_000) + ']'.repeat(100_000) + '}',
    });
    expect([res.statusCode, res.json().results?.[0]]).toEqual([
      200,
      {
        index: 0,
        id: 'd1',
        status: 'rejected',
        code: 'invalid_frame',
        message: expect.stringContaining('nested deeper'),
      },
    ]);
  });

  it('refuses a frame with any field nested too deep, and never lets nesting skip the size limit', async () => {
    ({ gateway } = build());
    const nested = (depth: number, inner: string) => '['.repeat(depth) + inner + ']'.repeat(depth);
    const res = await gateway.http.inject({
      method: 'POST',
      url: '/v1/send',
      headers: { ...(await auth()), 'content-type': 'application/json' },
      payload: `[{"type":"message","id":"ok1","to":"bob","body":"fine"},
        {"type":"ack","mids":["a:1"],"x":${nested(6000, '')}},
        {"type":"message","id":"big","to":"bob","body":"hi","meta":${nested(40, JSON.stringify('x'.repeat(200_000)))}}]`,
    });
    expect(res.statusCode).toBe(200);
    expect(res.json().results).toEqual([
      { index: 0, status: 'accepted', id: 'ok1', mid: 'alice:ok1' },
      {
        index: 1,
        status: 'rejected',
        code: 'invalid_frame',
        message: 'x: must not be nested deeper than 32 levels',
      },
      {
        index: 2,
        status: 'rejected',
        id: 'big',
        code: 'invalid_frame',
        message: 'meta: must not be nested deeper than 32 levels',
      },
    ]);
  });

  it('refuses a group or device body with a field nested too deep as 400 naming it, without calling upstream', async () => {
    const upstream = await startUpstream(() => ({ status: 500 }));
    ({ gateway } = build({ upstreamUrl: upstream.url }));
    try {
      const deep = '['.repeat(20_000) + ']'.repeat(20_000); // 40 KB: well under the body limit
      const headers = { ...(await auth()), 'content-type': 'application/json' };
      for (const [method, url, payload] of [
        ['POST', '/v1/groups', `{"name":"Team","members":["bob"],"meta":${deep}}`],
        ['POST', '/v1/groups/g1/members', `{"members":["carol"],"meta":${deep}}`],
        ['PUT', '/v1/devices/phone1', `{"token":"fcm-1","platform":"ios","meta":${deep}}`],
      ] as const) {
        const res = await gateway.http.inject({ method, url, headers, payload });
        expect([url, res.statusCode, res.json()]).toEqual([
          url,
          400,
          { error: { code: 'invalid_request', message: 'meta: must not be nested deeper than 32 levels' } },
        ]);
      }
      expect(upstream.seen).toEqual([]);
    } finally {
      await upstream.close();
    }
  });

  it('answers a path it cannot decode, or a segment far past any id, with the protocol error body', async () => {
    ({ gateway } = build());
    const headers = await auth();
    const get = async (url: string) => {
      const res = await gateway.http.inject({ method: 'GET', url, headers });
      return [res.statusCode, res.json()];
    };
    expect(await get('/v1/groups/%E0%A4%A')).toEqual([
      400,
      { error: { code: 'invalid_request', message: 'path: is not a valid URL (a malformed %-escape)' } },
    ]);
    expect(await get(`/v1/groups/${'a'.repeat(101)}`)).toEqual([
      400,
      {
        error: {
          code: 'invalid_request',
          message: 'params id: must match ^[A-Za-z0-9_.-]{1,64}$',
        },
      },
    ]);
  });

  it('answers a path segment past 1,000 characters as any bad id: 400 naming the param, on every route', async () => {
    // The web client's files (served by default) answer any GET no route took: a segment the router
    // refused for its length got their 404 "no route", and the other methods the router's message.
    ({ gateway } = build({ plugins: [webClientPlugin()] }));
    const headers = await auth();
    const long = 'a'.repeat(1500);
    const idRefused = {
      error: { code: 'invalid_request', message: 'params id: must match ^[A-Za-z0-9_.-]{1,64}$' },
    };
    for (const [method, url, refused] of [
      ['GET', `/v1/groups/${long}`, idRefused],
      ['POST', `/v1/groups/${long}/members`, idRefused],
      [
        'DELETE',
        `/v1/groups/g1/members/${long}`,
        { error: { ...idRefused.error, message: 'params user: must match ^[A-Za-z0-9_.-]{1,64}$' } },
      ],
      [
        'DELETE',
        `/v1/devices/${long}`,
        { error: { ...idRefused.error, message: 'params deviceId: must match ^[A-Za-z0-9_.-]{1,64}$' } },
      ],
      ...(['PUT', 'DELETE'] as const).map(
        (method) =>
          [
            method,
            `/v1/blocks/${long}`,
            { error: { ...idRefused.error, message: 'params user: must match ^[A-Za-z0-9_.-]{1,64}$' } },
          ] as const,
      ),
    ] as const) {
      const res = await gateway.http.inject({
        method,
        url,
        headers,
        payload: method === 'POST' ? { members: ['bob'] } : undefined,
      });
      expect([method, url.length, res.statusCode, res.json()]).toEqual([method, url.length, 400, refused]);
    }
  });

  it('answers every error status with its body', async () => {
    ({ gateway } = build());
    const headers = await auth();
    const tooMany = await gateway.http.inject({
      method: 'POST',
      url: '/v1/send',
      headers,
      payload: Array.from({ length: 101 }, () => ({ type: 'ack', mids: ['a:1'] })),
    });
    expect(tooMany.statusCode).toBe(400);
    expect(tooMany.json().error).toEqual({
      code: 'invalid_request',
      message: 'body: must NOT have more than 100 items',
    });
    const badJson = await gateway.http.inject({
      method: 'POST',
      url: '/v1/send',
      headers: { ...headers, 'content-type': 'application/json' },
      payload: '{"type":',
    });
    expect(badJson.statusCode).toBe(400);
    expect(badJson.json()).toEqual({
      error: { code: 'invalid_request', message: expect.stringMatching(/^body: is not valid JSON/) },
    });
    const huge = await gateway.http.inject({
      method: 'POST',
      url: '/v1/send',
      headers,
      payload: { type: 'message', id: 'x', to: 'bob', body: 'x'.repeat(1_100_000) },
    });
    expect(huge.statusCode).toBe(413);
    expect(huge.json()).toEqual({
      error: {
        code: 'too_large',
        message: expect.stringMatching(/^body: must be at most 1048576 bytes \(got 11000\d\d\)$/),
      },
    });
    const badQuery = await gateway.http.inject({ method: 'GET', url: '/v1/messages?limit=5000', headers });
    expect(badQuery.statusCode).toBe(400);
    expect(badQuery.json()).toEqual({
      error: { code: 'invalid_request', message: 'query limit: must be <= 500' },
    });
    const badDevice = await gateway.http.inject({
      method: 'PUT',
      url: '/v1/devices/phone',
      headers,
      payload: { token: 't', platform: 'symbian' },
    });
    expect(badDevice.statusCode).toBe(400);
    expect(badDevice.json()).toEqual({
      error: { code: 'invalid_request', message: 'platform: must be one of "android", "ios", "web"' },
    });
    // fetch() sends a string body as text/plain unless told otherwise
    const plain = await gateway.http.inject({
      method: 'POST',
      url: '/v1/send',
      headers: { ...headers, 'content-type': 'text/plain;charset=UTF-8' },
      payload: '{"type":"ack","mids":["a:1"]}',
    });
    expect([plain.statusCode, plain.json().error.message]).toEqual([
      400,
      'content-type: must be application/json (send the header content-type: application/json)',
    ]);
    for (const [payload, got] of [
      ['null', 'null'],
      ['"x"', 'a string'],
      ['', 'no body'],
    ]) {
      const scalar = await gateway.http.inject({
        method: 'POST',
        url: '/v1/send',
        headers: { ...headers, 'content-type': 'application/json' },
        payload,
      });
      expect([scalar.statusCode, scalar.json().error]).toEqual([
        400,
        {
          code: 'invalid_request',
          message: `body: must be a frame (a JSON object) or an array of frames (got ${got})`,
        },
      ]);
    }
    // a JSON body is taken as sent, as over the WebSocket: no number made a name, no name a list
    for (const [payload, message] of [
      [{ name: 12345, members: [] }, 'name: must be string'],
      [{ name: 'Team', members: 'bob' }, 'members: must be array'],
    ] as const) {
      const coerced = await gateway.http.inject({ method: 'POST', url: '/v1/groups', headers, payload });
      expect([coerced.statusCode, coerced.json().error]).toEqual([400, { code: 'invalid_request', message }]);
    }
    const unknown = await gateway.http.inject({ method: 'GET', url: '/v1/nothing?x=1', headers });
    expect(unknown.statusCode).toBe(404);
    expect(unknown.json()).toEqual({ error: { code: 'not_found', message: 'no route GET /v1/nothing' } });
  });

  it('answers 503 and accepts nothing when Kafka is down', async () => {
    let bus: MemoryBus;
    ({ gateway, bus } = build());
    await bus.close();
    const res = await send({ type: 'message', id: 'c1', to: 'bob', body: 1 });
    expect(res.statusCode).toBe(503);
    expect(res.json().error.code).toBe('unavailable');
    expect(['1', '2']).toContain(res.headers['retry-after']);
  });

  it('refuses frames with 503 while those waiting for a slow Kafka fill MAX_PENDING_PUBLISH_BYTES, and takes them again after', async () => {
    const { bus, release } = slowKafka();
    ({ gateway } = build({ bus, maxPendingPublishBytes: 300 }));
    const headers = await auth();
    const send = (id: string) =>
      gateway.http.inject({
        method: 'POST',
        url: '/v1/send',
        headers,
        payload: { type: 'message', id, to: 'bob', body: 'x'.repeat(100) },
      });
    const waiting = send('c1'); // held while Kafka is slow (alone, whatever its size: 200 bytes and 6 KiB for the frame)
    await new Promise((resolve) => setTimeout(resolve, 50));
    const refused = await send('c2');
    expect([refused.statusCode, refused.json().error.code]).toEqual([503, 'unavailable']);
    expect(['1', '2']).toContain(refused.headers['retry-after']);
    release();
    expect((await waiting).json().results).toEqual([
      { index: 0, status: 'accepted', id: 'c1', mid: 'alice:c1' },
    ]);
    expect((await send('c3')).statusCode).toBe(200);
  });

  it('takes a request of acks while frames waiting for a slow Kafka fill MAX_PENDING_PUBLISH_BYTES', async () => {
    const { bus, release } = slowKafka();
    // 100 frames of 900 bytes hold about 704 KB with the 6 KiB counted for each: held alone.
    ({ gateway } = build({ bus, maxPendingPublishBytes: 700_000 }));
    const frames = Array.from({ length: 100 }, (_, i) => ({
      type: 'message',
      id: `big${i}`,
      to: 'bob',
      body: 'x'.repeat(900),
    }));
    const waiting = send(frames);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const refused = await send({ type: 'message', id: 'c2', to: 'bob', body: 'hi' });
    expect([refused.statusCode, refused.json().error.code]).toEqual([503, 'unavailable']);
    const ack = send({ type: 'ack', mids: ['bob:m1'] });
    await new Promise((resolve) => setTimeout(resolve, 50));
    release();
    expect((await ack).json().results).toEqual([{ index: 0, status: 'accepted' }]);
    expect((await waiting).statusCode).toBe(200);
  });

  // A request whose frames alone exceed MAX_PENDING_PUBLISH_BYTES (65,536 at least; a body may hold
  // 1 MiB) never fits: "send them again later" on an idle gateway would be answered so forever.
  it('takes a request larger than MAX_PENDING_PUBLISH_BYTES when nothing else is waiting for Kafka', async () => {
    ({ gateway } = build({ maxPendingPublishBytes: 65_536 }));
    const frames = Array.from({ length: 100 }, (_, i) => ({
      type: 'message',
      id: `big${i}`,
      to: 'bob',
      body: 'x'.repeat(900), // under the test's MAX_FRAME_BYTES (1024); 100 of them about 100 KB
    }));
    const res = await send(frames);
    expect(res.statusCode).toBe(200);
    expect(res.json().results.filter((r: { status: string }) => r.status === 'accepted')).toHaveLength(100);
  });

  it('answers 503 naming the service when an upstream is unreachable', async () => {
    ({ gateway } = build({ upstreamUrl: 'http://127.0.0.1:1' }));
    const res = await gateway.http.inject({ method: 'GET', url: '/v1/groups', headers: await auth() });
    expect(res.statusCode).toBe(503);
    expect(res.json().error.message).toContain('group-ms is unreachable');
  });

  it("passes on an error code a newer service added as this release's code for its status, and serves a stored error frame carrying one", async () => {
    // A rolling upgrade: group-ms and persistence-ms of a later release, this rest-gateway older.
    const stored = {
      type: 'error',
      mid: '~err:alice:c9',
      id: 'c9',
      code: 'brand_new_code',
      message: 'refused for a reason this release does not know',
    };
    const upstream = await startUpstream((req) =>
      req.url!.startsWith('/internal/messages')
        ? { status: 200, raw: JSON.stringify({ messages: [stored], next: null }) }
        : { status: 409, raw: '{"error":{"code":"brand_new_code","message":"bob is in too many things"}}' },
    );
    ({ gateway } = build({ upstreamUrl: upstream.url }));
    try {
      const headers = await auth();
      const refused = await gateway.http.inject({
        method: 'POST',
        url: '/v1/groups/g1/members',
        headers,
        payload: { members: ['bob'] },
      });
      expect([refused.statusCode, refused.json().error]).toEqual([
        409,
        { code: 'conflict', message: 'bob is in too many things' },
      ]);
      const synced = await gateway.http.inject({ method: 'GET', url: '/v1/messages', headers });
      expect([synced.statusCode, synced.json().messages]).toEqual([200, [stored]]);
    } finally {
      await upstream.close();
    }
  });

  it('answers 503 when an upstream answers with something other than JSON (a proxy error page)', async () => {
    const upstream = await startUpstream(() => ({ status: 502, raw: '<html>Bad Gateway</html>' }));
    ({ gateway } = build({ upstreamUrl: upstream.url }));
    const res = await gateway.http.inject({ method: 'GET', url: '/v1/groups', headers: await auth() });
    expect([res.statusCode, res.json().error]).toEqual([
      503,
      { code: 'unavailable', message: 'group-ms answered 502 with a body that is not JSON' },
    ]);
    await upstream.close();
  });

  it('answers 503 naming the service when an upstream stops in the middle of its answer (stalls past the timeout, or resets)', async () => {
    const sockets = new Set<Socket>();
    const server = createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '1000' });
      res.write('{"groups":[');
      // /v1/groups: the rest never comes (the gateway's 2 s timeout ends it); /v1/messages: reset.
      if (req.url?.startsWith('/internal/messages')) setTimeout(() => res.socket?.destroy(), 50);
    });
    server.on('connection', (socket) => sockets.add(socket));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      ({ gateway } = build({ upstreamUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }));
      const headers = await auth();
      const stalled = await gateway.http.inject({ method: 'GET', url: '/v1/groups', headers });
      expect([stalled.statusCode, stalled.json().error]).toEqual([
        503,
        { code: 'unavailable', message: expect.stringMatching(/^group-ms answered 200 but its body/) },
      ]);
      const reset = await gateway.http.inject({ method: 'GET', url: '/v1/messages', headers });
      expect([reset.statusCode, reset.json().error]).toEqual([
        503,
        { code: 'unavailable', message: expect.stringMatching(/^persistence-ms answered 200 but its body/) },
      ]);
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('answers 503 naming the service as busy, with Retry-After, for a call past those under way and waiting', async () => {
    const held: Array<() => void> = [];
    const server = createServer((_req, res) =>
      held.push(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{"groups":[]}')),
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      let metrics: Registry;
      ({ gateway, metrics } = build({
        upstreamUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        upstreamLimits: { maxInFlight: 1, maxWaiting: 1 },
      }));
      const headers = await auth();
      const list = () => gateway.http.inject({ method: 'GET', url: '/v1/groups', headers });
      const waiting = async () => {
        const gauge = await metrics.getSingleMetric('parley_rest_upstream_waiting')!.get();
        return gauge.values.find((v) => v.labels.upstream === 'group-ms')?.value;
      };
      const first = list();
      await waitFor(() => held.length === 1, 10_000, 'a call held');
      const second = list();
      await waitFor(async () => (await waiting()) === 1, 10_000, 'a call waiting');
      const refused = await list();
      expect([refused.statusCode, refused.json().error]).toEqual([
        503,
        {
          code: 'unavailable',
          message: 'group-ms is busy: 1 calls to it are under way and 1 waiting; try again',
        },
      ]);
      // The spread wait every `unavailable` carries (1-2 s).
      expect(['1', '2']).toContain(refused.headers['retry-after']);
      held.shift()!();
      await waitFor(() => held.length === 1, 10_000, 'a call held');
      held.shift()!();
      expect([(await first).statusCode, (await second).statusCode]).toEqual([200, 200]);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it.each<[string, Parameters<typeof startUpstream>[0]]>([
    // A JSON body that is no error body (a 500 before: it failed the error schema), and none at all
    // (passed on before as a 404 with an empty body).
    [
      'no error body',
      (req) => (req.method === 'DELETE' ? { status: 404 } : { status: 404, body: { message: 'Not Found' } }),
    ],
    // `'toString' in ERROR_CODES` holds (the prototype's): the code reached statusOf, and the edge
    // answered 500 with fastify's own body (FST_ERR_BAD_STATUS_CODE), not the protocol's.
    [
      'an error body whose code the protocol lacks (an inherited property name)',
      (req) => ({
        status: 404,
        body: { error: { code: req.method === 'DELETE' ? '__proto__' : 'toString', message: 'gone' } },
      }),
    ],
  ])(
    'answers 503 naming the service, not 500 or a bare status, when an upstream answers 4xx with %s',
    async (_, answer) => {
      const upstream = await startUpstream(answer);
      ({ gateway } = build({ upstreamUrl: upstream.url }));
      try {
        const headers = await auth();
        const group = await gateway.http.inject({ method: 'GET', url: '/v1/groups/g1', headers });
        const device = await gateway.http.inject({ method: 'DELETE', url: '/v1/devices/phone1', headers });
        expect([group.statusCode, group.json()]).toEqual([
          503,
          { error: { code: 'unavailable', message: 'group-ms answered 404' } },
        ]);
        expect([device.statusCode, device.json()]).toEqual([
          503,
          { error: { code: 'unavailable', message: 'push-ms answered 404' } },
        ]);
      } finally {
        await upstream.close();
      }
    },
  );

  it('answers 503 naming the service, not a status or body the route does not document, when an upstream answers another success', async () => {
    // Each passed on before as it came: 202, 300 and 304 (none in the protocol), a 200 holding `{}`
    // (from null) or nothing for a list, a 200 with a body where a device's route answers 204.
    const answers: Record<string, { status: number; raw: string }> = {
      '/internal/groups': { status: 202, raw: '{"groups":[]}' },
      '/internal/groups/g1': { status: 304, raw: '' },
      '/internal/messages': { status: 300, raw: '{"messages":[],"next":null}' },
      '/internal/presence': { status: 200, raw: 'null' },
      '/internal/blocks/blockers': { status: 200, raw: '{"blockers":[]}' },
      '/internal/groups/g1/members': { status: 200, raw: '' },
      '/internal/devices/d1': { status: 200, raw: '{"registered":true}' },
    };
    const upstream = await startUpstream((req) => answers[req.url!.split('?')[0]]);
    ({ gateway } = build({ upstreamUrl: upstream.url }));
    try {
      const headers = await auth();
      const calls = [
        { method: 'GET', url: '/v1/groups', service: 'group-ms', status: 202 },
        { method: 'GET', url: '/v1/groups/g1', service: 'group-ms', status: 304 },
        { method: 'GET', url: '/v1/messages', service: 'persistence-ms', status: 300 },
        { method: 'GET', url: '/v1/presence?users=bob', service: 'session-ms', status: 200 },
        {
          method: 'POST',
          url: '/v1/groups/g1/members',
          service: 'group-ms',
          status: 200,
          body: { members: ['bob'] },
        },
        { method: 'DELETE', url: '/v1/devices/d1', service: 'push-ms', status: 200 },
      ] as const;
      for (const { method, url, service, status, ...rest } of calls) {
        const res = await gateway.http.inject({
          method,
          url,
          headers,
          payload: 'body' in rest ? rest.body : undefined,
        });
        expect([url, res.statusCode, res.json()]).toEqual([
          url,
          503,
          {
            error: {
              code: 'unavailable',
              message: expect.stringMatching(new RegExp(`^${service} answered ${status}`)),
            },
          },
        ]);
      }
      // The documented answers still pass.
      answers['/internal/groups'] = { status: 200, raw: '{"groups":[]}' };
      answers['/internal/devices/d1'] = { status: 204, raw: '' };
      expect((await gateway.http.inject({ method: 'GET', url: '/v1/groups', headers })).json()).toEqual({
        groups: [],
      });
      expect(
        (await gateway.http.inject({ method: 'DELETE', url: '/v1/devices/d1', headers })).statusCode,
      ).toBe(204);
    } finally {
      await upstream.close();
    }
  });

  it('follows no redirect from an upstream, so the internal secret goes nowhere else (503 naming the service)', async () => {
    const elsewhere = await startUpstream(() => ({ status: 200, body: { groups: [] } }));
    const redirecting = createServer((req, res) =>
      res.writeHead(307, { location: `${elsewhere.url}${req.url}` }).end(),
    );
    await new Promise<void>((resolve) => redirecting.listen(0, '127.0.0.1', resolve));
    try {
      ({ gateway } = build({
        upstreamUrl: `http://127.0.0.1:${(redirecting.address() as AddressInfo).port}`,
      }));
      const answer = await gateway.http.inject({ method: 'GET', url: '/v1/groups', headers: await auth() });
      expect([answer.statusCode, answer.json().error]).toEqual([
        503,
        { code: 'unavailable', message: expect.stringMatching(/^group-ms is unreachable/) },
      ]);
      expect(elsewhere.seen).toEqual([]);
    } finally {
      await new Promise((resolve) => redirecting.close(resolve));
      await elsewhere.close();
    }
  });

  it("answers 500 (logged as the fleet's misconfiguration), not the user's 403, when an upstream refuses the internal secret", async () => {
    const upstream = buildHttpServer({
      logger: silentLogger(),
      metrics: createMetricsRegistry('upstream', { collectDefaults: false }),
      readiness: new Readiness(),
    });
    requireInternalSecret(upstream, 'another-secret'); // INTERNAL_SECRET differs between them
    upstream.get('/internal/messages', async () => ({ messages: [], next: null }));
    await upstream.listen({ port: 0, host: '127.0.0.1' });
    try {
      ({ gateway } = build({
        upstreamUrl: `http://127.0.0.1:${(upstream.server.address() as AddressInfo).port}`,
      }));
      const sync = await gateway.http.inject({
        method: 'GET',
        url: '/v1/messages',
        headers: await auth('bob'),
      });
      expect([sync.statusCode, sync.json().error.code]).toEqual([500, 'internal']);
      // Before, the upstream's refusal reached the app as its own 403 forbidden.
    } finally {
      await upstream.close();
    }
  });

  it('calls upstreams as the authenticated user with the internal secret, and passes their errors through', async () => {
    const upstream = await startUpstream((req) => {
      if (req.url?.startsWith('/internal/groups/secret'))
        return { status: 404, body: { error: { code: 'not_found', message: 'no such group' } } };
      if (req.method === 'DELETE')
        return { status: 403, body: { error: { code: 'forbidden', message: 'only admins remove others' } } };
      if (req.url?.startsWith('/internal/groups?')) return { status: 200, body: { groups: [], next: null } };
      return { status: 200, body: { messages: [], next: null } };
    });
    ({ gateway } = build({ upstreamUrl: upstream.url }));
    const sync = await gateway.http.inject({
      method: 'GET',
      // A key the route does not take (a cache-buster, or a header's name) is not passed on.
      url: '/v1/messages?limit=10&_=1700000000&after=abc&x-parley-user=eve',
      headers: await auth('bob'),
    });
    expect(sync.json()).toEqual({ messages: [], next: null });
    const hidden = await gateway.http.inject({
      method: 'GET',
      url: '/v1/groups/secret',
      headers: await auth('bob'),
    });
    expect(hidden.statusCode).toBe(404);
    expect(hidden.json()).toEqual({ error: { code: 'not_found', message: 'no such group' } });
    const removal = await gateway.http.inject({
      method: 'DELETE',
      url: '/v1/groups/g1/members/carol',
      headers: await auth('bob'),
    });
    expect(removal.statusCode).toBe(403);
    expect(removal.json()).toEqual({ error: { code: 'forbidden', message: 'only admins remove others' } });
    expect(upstream.seen[0]).toMatchObject({
      method: 'GET',
      url: '/internal/messages?limit=10&after=abc',
      user: 'bob',
      secret: 'secret-for-internal-calls',
    });
    expect(upstream.seen[2]).toMatchObject({
      method: 'DELETE',
      url: '/internal/groups/g1/members/carol',
      user: 'bob',
      secret: 'secret-for-internal-calls',
    });
    const groupsPage = await gateway.http.inject({
      method: 'GET',
      url: '/v1/groups?limit=2&after=Zw',
      headers: await auth('bob'),
    });
    expect(groupsPage.json()).toEqual({ groups: [], next: null });
    expect(upstream.seen[3]).toMatchObject({ method: 'GET', url: '/internal/groups?limit=2&after=Zw' });
    await upstream.close();
  });

  it('passes on a presence list of up to 13,000 characters whole, its commas as they came', async () => {
    // Repeats count once (docs/protocol.md): 6,001 names within the limit ask about two users. Each
    // comma written as %2C made the upstream's request line 24 KB, past Node's 16 KiB (a 431 there).
    const users = `${'bob,'.repeat(3000)}carol`;
    expect(users.length).toBeLessThanOrEqual(13_000);
    const upstream = await startUpstream((req) =>
      req.url!.startsWith('/internal/blocks/blockers')
        ? { status: 200, body: { blockers: [] } }
        : { status: 200, body: { presence: [{ user: 'bob', online: false, lastSeen: null }] } },
    );
    ({ gateway } = build({ upstreamUrl: upstream.url }));
    try {
      const res = await gateway.http.inject({
        method: 'GET',
        url: `/v1/presence?users=${users}`,
        headers: await auth(),
      });
      expect([res.statusCode, res.json()]).toEqual([
        200,
        { presence: [{ user: 'bob', online: false, lastSeen: null }] },
      ]);
      // session-ms for the presence, group-ms for who of them blocked the caller: the same list to both.
      expect(upstream.seen.map((r) => r.url).sort()).toEqual([
        `/internal/blocks/blockers?users=${users}`,
        `/internal/presence?users=${users}`,
      ]);
    } finally {
      await upstream.close();
    }
  });

  it('erases an account in every service, groups first and storage last, and answers 503 where one fails part way', async () => {
    let sessionDown = true;
    const erased: Record<string, number> = { group: 2, push: 1, session: 3, persistence: 4 };
    const upstreamOf = (name: string) =>
      startUpstream(() =>
        name === 'session' && sessionDown
          ? { status: 503, body: { error: { code: 'unavailable', message: 'Redis is away' } } }
          : { status: 200, body: { erased: erased[name] } },
      );
    const services = {
      group: await upstreamOf('group'),
      push: await upstreamOf('push'),
      session: await upstreamOf('session'),
      persistence: await upstreamOf('persistence'),
    };
    ({ gateway } = build({
      upstreamUrls: {
        'group-ms': services.group.url,
        'push-ms': services.push.url,
        'session-ms': services.session.url,
        'persistence-ms': services.persistence.url,
      },
    }));
    const erase = async () =>
      gateway.http.inject({ method: 'DELETE', url: '/v1/account', headers: await auth('bob') });
    const failed = await erase();
    expect([failed.statusCode, failed.json().error.code]).toEqual([503, 'unavailable']);
    expect(services.persistence.seen).toEqual([]); // storage is not erased before what awaits an ack
    sessionDown = false;
    const done = await erase();
    expect([done.statusCode, done.json()]).toEqual([
      200,
      { erased: { groups: 2, devices: 1, pending: 3, stored: 4 } },
    ]);
    for (const upstream of Object.values(services)) {
      expect(upstream.seen.at(-1)).toMatchObject({ method: 'DELETE', url: '/internal/account', user: 'bob' });
      await upstream.close();
    }
  });

  it('refuses the ids . and .. in a path, which a URL would resolve to another route', async () => {
    const upstream = await startUpstream(() => ({
      status: 404,
      body: { error: { code: 'not_found', message: 'no such group' } },
    }));
    ({ gateway } = build({ upstreamUrl: upstream.url }));
    const address = await gateway.http.listen({ port: 0, host: '127.0.0.1' });
    const headers = await auth('bob');
    // node:http sends the path as it is (fetch and inject would resolve the dots first).
    const call = (method: string, path: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const { hostname, port } = new URL(address);
        const req = request({ hostname, port, path, method, headers, agent: false }, (res) => {
          let body = '';
          res.on('data', (chunk) => (body += chunk));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on('error', reject);
        req.end();
      });
    const dot = await call('GET', '/v1/groups/.');
    expect(dot.status).toBe(400);
    expect(JSON.parse(dot.body).error).toEqual({
      code: 'invalid_request',
      message: 'id: "." cannot be addressed in a URL path',
    });
    expect((await call('DELETE', '/v1/groups/g1/members/..')).status).toBe(400);
    expect((await call('DELETE', '/v1/groups/..a/members/b.c')).status).toBe(404); // reached group-ms
    expect(upstream.seen.map((seen) => seen.url)).toEqual(['/internal/groups/..a/members/b.c']);
    await upstream.close();
  });

  it('registers and unregisters devices on push-ms as the authenticated user with the internal secret', async () => {
    const push = await startUpstream(() => ({ status: 204 }));
    ({ gateway } = build({ upstreamUrls: { 'push-ms': push.url } }));
    const registration = { token: 'fcm-token-1', platform: 'android' };
    const put = await gateway.http.inject({
      method: 'PUT',
      url: '/v1/devices/phone1',
      headers: await auth('bob'),
      payload: registration,
    });
    expect(put.statusCode).toBe(204);
    expect(put.body).toBe('');
    const del = await gateway.http.inject({
      method: 'DELETE',
      url: '/v1/devices/phone1',
      // as app HTTP wrappers send on every request: an empty body is no body
      headers: { ...(await auth('bob')), 'content-type': 'application/json' },
    });
    expect(del.statusCode).toBe(204);
    expect(push.seen).toEqual([
      {
        method: 'PUT',
        url: '/internal/devices/phone1',
        user: 'bob',
        secret: 'secret-for-internal-calls',
        body: JSON.stringify(registration),
      },
      {
        method: 'DELETE',
        url: '/internal/devices/phone1',
        user: 'bob',
        secret: 'secret-for-internal-calls',
        body: '',
      },
    ]);
    await push.close();
  });

  it('blocks, unblocks and lists blocks on group-ms as the authenticated user, passing its 204s on with no body and its refusals as they are', async () => {
    const group = await startUpstream((req) => {
      if (req.url === '/internal/blocks/eve' && req.method === 'PUT')
        return {
          status: 409,
          body: {
            error: {
              code: 'too_many_blocks',
              message: 'at most 1000 users may be blocked; unblock one first',
            },
          },
        };
      if (req.url === '/internal/blocks/bob' && req.method === 'PUT')
        return {
          status: 400,
          body: { error: { code: 'invalid_request', message: 'user: you cannot block yourself' } },
        };
      if (req.method === 'GET') return { status: 200, body: { blocked: ['carol', 'dan'] } };
      return { status: 204 };
    });
    ({ gateway } = build({ upstreamUrls: { 'group-ms': group.url } }));
    try {
      const headers = await auth('bob');
      // No body, or an empty one with the JSON content type (as app HTTP wrappers send every request).
      const block = await gateway.http.inject({ method: 'PUT', url: '/v1/blocks/carol', headers });
      const again = await gateway.http.inject({
        method: 'PUT',
        url: '/v1/blocks/carol',
        headers: { ...headers, 'content-type': 'application/json' },
      });
      const unblock = await gateway.http.inject({ method: 'DELETE', url: '/v1/blocks/carol', headers });
      for (const res of [block, again, unblock]) expect([res.statusCode, res.body]).toEqual([204, '']);
      const list = await gateway.http.inject({ method: 'GET', url: '/v1/blocks', headers });
      expect([list.statusCode, list.json()]).toEqual([200, { blocked: ['carol', 'dan'] }]);
      expect(
        group.seen.map(({ method, url, user, secret, body }) => ({ method, url, user, secret, body })),
      ).toEqual(
        [
          ['PUT', '/internal/blocks/carol'],
          ['PUT', '/internal/blocks/carol'],
          ['DELETE', '/internal/blocks/carol'],
          ['GET', '/internal/blocks'],
        ].map(([method, url]) => ({
          method,
          url,
          user: 'bob',
          secret: 'secret-for-internal-calls',
          body: '',
        })),
      );

      const full = await gateway.http.inject({ method: 'PUT', url: '/v1/blocks/eve', headers });
      expect([full.statusCode, full.json().error]).toEqual([
        409,
        { code: 'too_many_blocks', message: 'at most 1000 users may be blocked; unblock one first' },
      ]);
      const self = await gateway.http.inject({ method: 'PUT', url: '/v1/blocks/bob', headers });
      expect([self.statusCode, self.json().error]).toEqual([
        400,
        { code: 'invalid_request', message: 'user: you cannot block yourself' },
      ]);
    } finally {
      await group.close();
    }
  });

  it('mutes, unmutes and lists mutes on push-ms as the authenticated user, passing until on and its 409 as it is', async () => {
    const push = await startUpstream((req) => {
      if (req.url?.startsWith('/internal/mutes/direct/many'))
        return {
          status: 409,
          body: {
            error: {
              code: 'too_many_mutes',
              message: 'at most 1000 conversations may be muted; unmute one first',
            },
          },
        };
      if (req.method === 'GET')
        return { status: 200, body: { mutes: [{ chat: 'group', id: 'team', until: null }] } };
      return { status: 204 };
    });
    ({ gateway } = build({ upstreamUrls: { 'push-ms': push.url } }));
    try {
      const headers = await auth('bob');
      const call = (method: 'PUT' | 'DELETE' | 'GET', url: string) =>
        gateway.http.inject({ method, url, headers });
      expect((await call('PUT', '/v1/mutes/group/team')).statusCode).toBe(204);
      expect((await call('PUT', '/v1/mutes/direct/carol?until=1700000000000&cachebuster=1')).statusCode).toBe(
        204,
      );
      expect((await call('DELETE', '/v1/mutes/direct/carol')).statusCode).toBe(204);
      const list = await call('GET', '/v1/mutes');
      expect([list.statusCode, list.json()]).toEqual([
        200,
        { mutes: [{ chat: 'group', id: 'team', until: null }] },
      ]);
      expect(push.seen.map(({ method, url, user }) => [method, url, user])).toEqual([
        ['PUT', '/internal/mutes/group/team', 'bob'],
        ['PUT', '/internal/mutes/direct/carol?until=1700000000000', 'bob'],
        ['DELETE', '/internal/mutes/direct/carol', 'bob'],
        ['GET', '/internal/mutes', 'bob'],
      ]);
      const full = await call('PUT', '/v1/mutes/direct/many');
      expect([full.statusCode, full.json().error.code]).toEqual([409, 'too_many_mutes']);
      // Refused here, never asked upstream: a kind of conversation the protocol does not have.
      const bad = await call('PUT', '/v1/mutes/channel/x');
      expect([bad.statusCode, bad.json().error.code]).toEqual([400, 'invalid_request']);
      expect(push.seen).toHaveLength(5);
    } finally {
      await push.close();
    }
  });

  it('files a report on group-ms as the authenticated user, the body as given, and passes its 429 on with its Retry-After', async () => {
    const group = await startUpstream((req, body) =>
      (JSON.parse(body) as { user: string }).user === 'spammer'
        ? {
            status: 429,
            headers: { 'retry-after': '3600' },
            body: { error: { code: 'rate_limited', message: 'at most 20 reports a day; retry in 3600 s' } },
          }
        : { status: 201, body: { id: 'rep-1', at: 1700000000000 } },
    );
    ({ gateway } = build({ upstreamUrls: { 'group-ms': group.url } }));
    try {
      const headers = await auth('bob');
      const payload = {
        user: 'mallory',
        reason: 'harassment',
        comment: 'again\nand again',
        messages: [{ mid: 'mallory:m1', body: { text: 'hi' }, sentAt: 1 }],
      };
      const filed = await gateway.http.inject({ method: 'POST', url: '/v1/reports', headers, payload });
      expect([filed.statusCode, filed.json()]).toEqual([201, { id: 'rep-1', at: 1700000000000 }]);
      expect(
        group.seen.map(({ method, url, user, body }) => ({ method, url, user, body: JSON.parse(body) })),
      ).toEqual([{ method: 'POST', url: '/internal/reports', user: 'bob', body: payload }]);
      const limited = await gateway.http.inject({
        method: 'POST',
        url: '/v1/reports',
        headers,
        payload: { user: 'spammer', reason: 'spam' },
      });
      expect([limited.statusCode, limited.headers['retry-after'], limited.json().error.code]).toEqual([
        429,
        '3600',
        'rate_limited',
      ]);
      // Refused here, never asked upstream: a reason the protocol does not have, named.
      const bad = await gateway.http.inject({
        method: 'POST',
        url: '/v1/reports',
        headers,
        payload: { user: 'mallory', reason: 'rude' },
      });
      expect([bad.statusCode, bad.json().error.code]).toEqual([400, 'invalid_request']);
      expect(bad.json().error.message).toContain('reason');
      expect(group.seen).toHaveLength(2);
    } finally {
      await group.close();
    }
  });

  it('answers the presence of users who blocked the caller as offline with no last seen, asking session-ms and group-ms as the caller', async () => {
    const session = await startUpstream(() => ({
      status: 200,
      body: {
        presence: [
          { user: 'bob', online: true, lastSeen: 1700000000000 },
          { user: 'carol', online: true, lastSeen: 1700000000001 },
          { user: 'dan', online: false, lastSeen: 1600000000000 },
        ],
      },
    }));
    const group = await startUpstream(() => ({ status: 200, body: { blockers: ['dan', 'bob'] } }));
    ({ gateway } = build({ upstreamUrls: { 'session-ms': session.url, 'group-ms': group.url } }));
    try {
      const res = await gateway.http.inject({
        method: 'GET',
        url: '/v1/presence?users=bob,carol,dan,bob',
        headers: await auth('alice'),
      });
      expect([res.statusCode, res.json()]).toEqual([
        200,
        {
          presence: [
            { user: 'bob', online: false, lastSeen: null },
            { user: 'carol', online: true, lastSeen: 1700000000001 },
            { user: 'dan', online: false, lastSeen: null },
          ],
        },
      ]);
      expect(session.seen).toMatchObject([
        { url: '/internal/presence?users=bob,carol,dan,bob', user: 'alice' },
      ]);
      expect(group.seen).toMatchObject([
        { method: 'GET', url: '/internal/blocks/blockers?users=bob,carol,dan,bob', user: 'alice' },
      ]);
    } finally {
      await session.close();
      await group.close();
    }
  });

  it('answers presence 503, showing no one, when group-ms cannot say who blocked the caller (unreachable, failing, or an unexpected body)', async () => {
    const session = await startUpstream(() => ({
      status: 200,
      body: { presence: [{ user: 'bob', online: true, lastSeen: 1700000000000 }] },
    }));
    let groupAnswer: { status: number; body?: unknown; raw?: string } = { status: 200 };
    const group = await startUpstream(() => groupAnswer);
    const presence = async () =>
      gateway.http.inject({ method: 'GET', url: '/v1/presence?users=bob', headers: await auth('alice') });
    try {
      // group-ms unreachable (nothing listens at the default address)
      ({ gateway } = build({ upstreamUrls: { 'session-ms': session.url } }));
      const unreachable = await presence();
      expect([unreachable.statusCode, unreachable.json().error]).toEqual([
        503,
        { code: 'unavailable', message: expect.stringMatching(/^group-ms is unreachable/) },
      ]);
      await gateway.http.close();
      ({ gateway } = build({ upstreamUrls: { 'session-ms': session.url, 'group-ms': group.url } }));
      for (const [answer, error] of [
        [
          { status: 503, body: { error: { code: 'unavailable', message: 'the database is away' } } },
          { code: 'unavailable', message: 'the database is away' },
        ],
        [
          { status: 500, raw: '' },
          { code: 'unavailable', message: 'group-ms answered 500' },
        ],
        [
          { status: 200, body: { blocked: ['bob'] } },
          { code: 'unavailable', message: 'group-ms answered the presence with an unexpected body' },
        ],
      ] as const) {
        groupAnswer = answer;
        const res = await presence();
        expect([res.statusCode, res.json()]).toEqual([503, { error: error }]);
      }
      groupAnswer = { status: 200, body: { blockers: [] } };
      expect((await presence()).json()).toEqual({
        presence: [{ user: 'bob', online: true, lastSeen: 1700000000000 }],
      });
    } finally {
      await session.close();
      await group.close();
    }
  });

  it('answers CORS preflights for the configured origins only', async () => {
    ({ gateway } = build({ corsOrigins: ['https://app.example'] }));
    const preflight = (origin: string) =>
      gateway.http.inject({
        method: 'OPTIONS',
        url: '/v1/send',
        headers: {
          origin,
          'access-control-request-method': 'POST',
          'access-control-request-headers': 'authorization,content-type',
        },
      });
    const allowed = await preflight('https://app.example');
    expect(allowed.statusCode).toBe(204);
    expect(allowed.headers).toMatchObject({
      'access-control-allow-origin': 'https://app.example',
      'access-control-max-age': '600',
    });
    expect(String(allowed.headers['access-control-allow-methods'])).toContain('POST');
    expect(String(allowed.headers['access-control-allow-headers'])).toContain('authorization');
    const other = await preflight('https://evil.example');
    expect(other.headers['access-control-allow-origin']).toBeUndefined();
    const send = await gateway.http.inject({
      method: 'POST',
      url: '/v1/send',
      headers: { ...(await auth()), origin: 'https://app.example' },
      payload: { type: 'ack', mids: ['a:1'] },
    });
    expect(send.statusCode).toBe(200);
    expect(send.headers['access-control-allow-origin']).toBe('https://app.example');
  });

  it('allows in a CORS preflight every method the API has: PUT and DELETE too (devices, leaving a group)', async () => {
    ({ gateway } = build({ corsOrigins: ['https://app.example'] }));
    for (const [method, url] of [
      ['PUT', '/v1/devices/phone1'],
      ['DELETE', '/v1/devices/phone1'],
      ['DELETE', '/v1/groups/g1/members/alice'],
      ['GET', '/v1/messages'],
      ['POST', '/v1/send'],
    ]) {
      const preflight = await gateway.http.inject({
        method: 'OPTIONS',
        url,
        headers: {
          origin: 'https://app.example',
          'access-control-request-method': method,
          'access-control-request-headers': 'authorization,content-type',
        },
      });
      const allowed = String(preflight.headers['access-control-allow-methods']).split(/\s*,\s*/);
      expect([method, url, preflight.statusCode, allowed]).toEqual([
        method,
        url,
        204,
        expect.arrayContaining([method]),
      ]);
    }
  });

  it("exposes a 429's Retry-After to a script of an allowed origin (not a CORS-safelisted header)", async () => {
    ({ gateway } = build({ corsOrigins: ['https://app.example'], rateLimitPerMinute: 1 }));
    const send = async () =>
      gateway.http.inject({
        method: 'POST',
        url: '/v1/send',
        headers: { ...(await auth()), origin: 'https://app.example' },
        payload: { type: 'ack', mids: ['a:1'] },
      });
    expect((await send()).statusCode).toBe(200);
    const limited = await send();
    expect(limited.statusCode).toBe(429);
    expect(limited.headers['access-control-allow-origin']).toBe('https://app.example');
    expect(
      String(limited.headers['access-control-expose-headers'])
        .toLowerCase()
        .split(/\s*,\s*/),
    ).toContain('retry-after');
  });

  it('sends no CORS headers when no origin is configured', async () => {
    ({ gateway } = build());
    const preflight = await gateway.http.inject({
      method: 'OPTIONS',
      url: '/v1/send',
      headers: { origin: 'https://app.example', 'access-control-request-method': 'POST' },
    });
    expect(preflight.headers['access-control-allow-origin']).toBeUndefined();
    expect(preflight.statusCode).toBe(404);
    const send = await gateway.http.inject({
      method: 'POST',
      url: '/v1/send',
      headers: { ...(await auth()), origin: 'https://app.example' },
      payload: { type: 'ack', mids: ['a:1'] },
    });
    expect(send.statusCode).toBe(200);
    expect(send.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('rate-limits per user with 429 and Retry-After', async () => {
    ({ gateway } = build({ rateLimitPerMinute: 2 }));
    const alice = await auth('alice');
    const send = (headers: Record<string, string>) =>
      gateway.http.inject({
        method: 'POST',
        url: '/v1/send',
        headers,
        payload: { type: 'ack', mids: ['a:1'] },
      });
    expect((await send(alice)).statusCode).toBe(200);
    expect((await send(alice)).statusCode).toBe(200);
    const limited = await send(alice);
    expect(limited.statusCode).toBe(429);
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
    expect(limited.json().error.code).toBe('rate_limited');
    // The window is a minute; the message once named the time left in it as the window.
    expect(limited.json().error.message).toMatch(
      /^rate limit of 2 requests a minute reached; retry after \d+ seconds?$/,
    );
    expect((await send(await auth('bob'))).statusCode).toBe(200);
  });

  it("counts the minute of the rate limit on the monotonic clock: a wall clock set back (NTP, a VM's clock set) holds no one refused past it", async () => {
    ({ gateway } = build({ rateLimitPerMinute: 2 }));
    const alice = await auth('alice');
    const ack = () =>
      gateway.http.inject({
        method: 'POST',
        url: '/v1/send',
        headers: alice,
        payload: { type: 'ack', mids: ['a:1'] },
      });
    // A reading for which (t + 60000) - t is 60000.00000000001: a Retry-After rounded up from a
    // stored end said 61 s.
    let monotonic = 6539.822857;
    let wall = Date.now();
    const clocks = [
      jest.spyOn(performance, 'now').mockImplementation(() => monotonic),
      jest.spyOn(Date, 'now').mockImplementation(() => wall),
    ];
    try {
      expect([(await ack()).statusCode, (await ack()).statusCode]).toEqual([200, 200]);
      const limited = await ack();
      expect(limited.statusCode).toBe(429);
      expect(Number(limited.headers['retry-after'])).toBeLessThanOrEqual(60);
      wall -= 3_600_000; // set back an hour
      monotonic += 1000;
      wall += 1000;
      const meanwhile = await ack();
      expect(meanwhile.statusCode).toBe(429);
      expect(Number(meanwhile.headers['retry-after'])).toBeLessThanOrEqual(59); // not an hour
      monotonic += 60_000;
      wall += 60_000;
      expect((await ack()).statusCode).toBe(200); // the minute has passed
    } finally {
      for (const clock of clocks) clock.mockRestore();
    }
  });

  it('takes frames per user up to a budget, then rejects the rest rate_limited with retryAfterMs; acks have a larger one', async () => {
    const built = build({ sendFramesPerSecond: 0.1, sendFramesBurst: 3 });
    gateway = built.gateway;
    const messages = (ids: string[]) => ids.map((id) => ({ type: 'message', id, to: 'bob', body: id }));
    const first = (await send(messages(['m1', 'm2']), 'alice')).json().results;
    const second = (
      await send([...messages(['m3', 'm4', 'm5']), { type: 'ack', mids: ['bob:1'] }], 'alice')
    ).json().results;
    expect([...first, ...second].map((r: SendResult) => r.status)).toEqual([
      'accepted',
      'accepted',
      'accepted',
      'rejected',
      'rejected',
      'accepted', // the ack, from its own budget
    ]);
    for (const refused of second.slice(1, 3)) {
      expect(refused).toMatchObject({ code: 'rate_limited', id: expect.stringMatching(/^m[45]$/) });
      // At 0.1 frames a second the next is up to 10 s away: in ms, and in the message in s.
      expect(refused.retryAfterMs).toBeGreaterThan(9000);
      expect(refused.retryAfterMs).toBeLessThanOrEqual(10_000);
      expect(refused.message).toBe(
        `too many frames: retry after ${(refused.retryAfterMs / 1000).toFixed(3)} s`,
      );
    }
    const published = (await send(messages(['b1', 'b2', 'b3']), 'bob')).json().results;
    expect(published.map((r: SendResult) => r.status)).toEqual(['accepted', 'accepted', 'accepted']); // his own
    const counted = async (name: string) =>
      (await built.metrics.getSingleMetric(name)!.get()).values.map((v) => [v.labels, v.value]);
    expect(await counted('parley_rest_frames_total')).toEqual([
      [{ type: 'message' }, 6],
      [{ type: 'ack' }, 1],
    ]);
    expect(await counted('parley_rest_rejected_total')).toEqual([[{ code: 'rate_limited' }, 2]]);
  });

  it('refuses every later frame of a request once one was refused, even when a token came meanwhile: a resend keeps the order', async () => {
    ({ gateway } = build({ sendFramesPerSecond: 100, sendFramesBurst: 2 }));
    const headers = await auth('alice');
    // Budgets run on the monotonic clock.
    let now = performance.now();
    const clock = jest.spyOn(performance, 'now').mockImplementation(() => (now += 1)); // a token every 10 reads
    try {
      const payload = Array.from({ length: 40 }, (_, i) => ({
        type: 'message',
        id: `m${i}`,
        to: 'bob',
        body: i,
      }));
      const res = await gateway.http.inject({ method: 'POST', url: '/v1/send', headers, payload });
      const statuses = res.json().results.map((r: SendResult) => r.status);
      expect(statuses).toEqual([...Array(2).fill('accepted'), ...Array(38).fill('rejected')]);
    } finally {
      clock.mockRestore();
    }
  });

  it('gives back the tokens of a request answered 503 (nothing accepted): the resend is not rate-limited', async () => {
    const bus = new MemoryBus();
    bus.refusePublish = () => true; // Kafka away
    ({ gateway } = build({ bus, sendFramesPerSecond: 0.1, sendFramesBurst: 3 }));
    const payload = [
      ...['m1', 'm2', 'm3'].map((id) => ({ type: 'message', id, to: 'bob', body: id })),
      { type: 'ack', mids: ['bob:1'] },
    ];
    for (let i = 0; i < 2; i++) expect((await send(payload, 'alice')).statusCode).toBe(503);
    bus.refusePublish = () => false;
    // "nothing was accepted, send them again": the resend is taken as the first attempt would have been.
    const results = (await send(payload, 'alice')).json().results;
    expect(results.map((r: SendResult) => r.status)).toEqual([
      'accepted',
      'accepted',
      'accepted',
      'accepted',
    ]);
  });

  it('counts requests refused as invalid against the rate limit, before reading their body', async () => {
    ({ gateway } = build({ rateLimitPerMinute: 2 }));
    const alice = await auth('alice');
    // Each is a full body to parse and validate: uncounted, a client could send them without end.
    const invalid = [
      { method: 'POST' as const, url: '/v1/send', payload: '{"type":' },
      {
        method: 'POST' as const,
        url: '/v1/groups',
        payload: { name: 'x', members: 'bob', pad: 'x'.repeat(1000) },
      },
      { method: 'GET' as const, url: '/v1/messages?limit=0' },
      { method: 'POST' as const, url: '/v1/send', payload: '{"type":' },
    ];
    const codes: number[] = [];
    for (const req of invalid) {
      const res = await gateway.http.inject({
        ...req,
        headers: { ...alice, 'content-type': 'application/json' },
      });
      codes.push(res.statusCode);
    }
    expect(codes).toEqual([400, 400, 429, 429]);
  });

  it('serves POST /v1/dev/token only in dev mode', async () => {
    ({ gateway } = build({ devMode: false }));
    const hidden = await gateway.http.inject({
      method: 'POST',
      url: '/v1/dev/token',
      payload: { user: 'alice' },
    });
    expect(hidden.statusCode).toBe(404);
    expect(hidden.json()).toEqual({ error: { code: 'not_found', message: 'no route POST /v1/dev/token' } });
    await gateway.http.close();
    ({ gateway } = build({ devMode: true }));
    const res = await gateway.http.inject({
      method: 'POST',
      url: '/v1/dev/token',
      payload: { user: 'alice' },
    });
    const verify = createTokenVerifier({ JWT_SECRET: DEV_JWT_SECRET });
    await expect(verify(res.json().token)).resolves.toMatchObject({ user: 'alice' });
    expect(
      (await gateway.http.inject({ method: 'POST', url: '/v1/dev/token', payload: { user: 'a b' } }))
        .statusCode,
    ).toBe(400);
  });

  it('issues dev tokens with the issuer and audience it checks (JWT_ISSUER, JWT_AUDIENCE), so they log in', async () => {
    ({ gateway } = build({
      devMode: true,
      tokenClaims: { issuer: 'https://id.example', audience: 'parley' },
    }));
    const issued = await gateway.http.inject({
      method: 'POST',
      url: '/v1/dev/token',
      payload: { user: 'alice' },
    });
    const headers = { authorization: `Bearer ${issued.json().token}` };
    const presence = await gateway.http.inject({ method: 'GET', url: '/v1/presence?users=bob', headers });
    expect(presence.statusCode).toBe(503); // past the token check, to the upstream (none listens here)
    const unclaimed = await gateway.http.inject({
      method: 'GET',
      url: '/v1/presence?users=bob',
      headers: await auth(),
    });
    expect(unclaimed.statusCode).toBe(401);
  });

  it('documents every integer that may pass 32 bits as int64, so that a generated client reads real timestamps', async () => {
    const now = Date.now();
    const group = { id: 'g1', name: 'n', members: ['alice'], admins: ['alice'], createdAt: now };
    const answers: Record<string, { status: number; body: unknown }> = {
      '/internal/groups/g1': { status: 200, body: group },
      '/internal/presence': {
        status: 200,
        body: { presence: [{ user: 'bob', online: false, lastSeen: now }] },
      },
      '/internal/blocks/blockers': { status: 200, body: { blockers: [] } },
      '/internal/mutes': {
        status: 200,
        body: { mutes: [{ chat: 'direct', id: 'bob', until: now + 60_000 }] },
      },
      '/internal/reports': { status: 201, body: { id: 'alice:r1', at: now } },
      '/internal/messages': {
        status: 200,
        body: {
          messages: [
            {
              type: 'message',
              mid: 'bob:c1',
              id: 'c1',
              from: 'bob',
              to: 'alice',
              chat: 'direct',
              body: {},
              sentAt: now,
            },
            { type: 'receipt', mid: '~dlv:bob:x', status: 'read', mids: ['alice:c1'], by: 'bob', at: now },
            { type: 'group', mid: '~group:bob:o1', op: 'leave', group: 'g1', by: 'bob', at: now },
          ],
          next: null,
        },
      },
    };
    const upstream = await startUpstream((req) => answers[req.url!.split('?')[0]]);
    ({ gateway } = build({ upstreamUrl: upstream.url }));
    try {
      await gateway.http.ready();
      const doc = (await gateway.http.inject('/docs/json')).json() as OpenApiDocument;
      const headers = await auth();
      const calls: Array<[string, string, string, object?]> = [
        ['get', '/v1/groups/g1', '/v1/groups/{id}'],
        ['get', '/v1/presence?users=bob', '/v1/presence'],
        ['get', '/v1/mutes', '/v1/mutes'],
        ['get', '/v1/messages', '/v1/messages'],
        ['post', '/v1/reports', '/v1/reports', { user: 'bob', reason: 'spam' }],
      ];
      const refused = [];
      for (const [method, url, path, payload] of calls) {
        const res = await gateway.http.inject({
          method: method.toUpperCase() as 'GET',
          url,
          headers,
          payload,
        });
        refused.push([
          path,
          refusedByGeneratedClient(documentedAnswer(doc, method, path, res.statusCode), res.json()),
        ]);
      }
      expect(refused).toEqual(calls.map(([, , path]) => [path, []]));
      // What a client writes too: a mute's end, in milliseconds since the epoch.
      const until = doc.paths['/v1/mutes/{chat}/{id}'].put.parameters!.find((p) => p.name === 'until')!;
      expect(refusedByGeneratedClient(until.schema, now + 60_000)).toEqual([]);
    } finally {
      await upstream.close();
    }
  });

  it("documents each route's refusals as the protocol's table gives them: 500 too, and the Retry-After a 429 and a 503 carry", async () => {
    const upstream = buildHttpServer({
      logger: silentLogger(),
      metrics: createMetricsRegistry('upstream', { collectDefaults: false }),
      readiness: new Readiness(),
    });
    requireInternalSecret(upstream, 'another-secret'); // answered 500 (the fleet's misconfiguration)
    upstream.get('/internal/groups/:id', async () => ({}));
    await upstream.listen({ port: 0, host: '127.0.0.1' });
    try {
      ({ gateway } = build({
        rateLimitPerMinute: 2,
        upstreamUrls: { 'group-ms': `http://127.0.0.1:${(upstream.server.address() as AddressInfo).port}` },
      }));
      await gateway.http.ready();
      const doc = (await gateway.http.inject('/docs/json')).json() as OpenApiDocument;
      const headers = await auth();
      const get = (url: string) => gateway.http.inject({ method: 'GET', url, headers });
      // persistence-ms unreachable (503), group-ms refusing the secret (500), then the rate limit (429).
      const refusals: Array<[string, string, number]> = [
        ['/v1/messages', '/v1/messages', 503],
        ['/v1/groups/g1', '/v1/groups/{id}', 500],
        ['/v1/blocks', '/v1/blocks', 429],
      ];
      for (const [url, path, status] of refusals) {
        const res = await get(url);
        expect(res.statusCode).toBe(status);
        const documented = doc.paths[path].get.responses[String(status)];
        expect(refusedByGeneratedClient(documentedAnswer(doc, 'get', path, status), res.json())).toEqual([]);
        if (res.headers['retry-after'] !== undefined) {
          const header = documented.headers?.['Retry-After'];
          expect([
            path,
            status,
            header && refusedByGeneratedClient(header.schema, Number(res.headers['retry-after'])),
          ]).toEqual([path, status, []]);
        }
      }
      // And so on every route that needs the token.
      const undocumented = Object.entries(doc.paths).flatMap(([path, methods]) =>
        Object.entries(methods)
          .filter(([, operation]) => operation.security)
          .flatMap(([method, { responses }]) =>
            ['400', '401', '429', '500', '503']
              .filter((status) => !responses[status]?.content)
              .concat(['429', '503'].filter((status) => !responses[status]?.headers?.['Retry-After']))
              .map((status) => `${method} ${path} ${status}`),
          ),
      );
      expect(undocumented).toEqual([]);
    } finally {
      await upstream.close();
    }
  });

  it('names every operation with its own operationId, which generators name client methods by (AutoRest refuses an operation without one)', async () => {
    ({ gateway } = build({ devMode: true }));
    await gateway.http.ready();
    const doc = (await gateway.http.inject('/docs/json')).json() as OpenApiDocument;
    const operations = Object.entries(doc.paths).flatMap(([path, methods]) =>
      Object.entries(methods).map(([method, { operationId }]) => ({
        route: `${method} ${path}`,
        operationId,
      })),
    );
    expect(operations.filter(({ operationId }) => !operationId)).toEqual([]);
    const ids = operations.map(({ operationId }) => operationId);
    expect(new Set(ids).size).toBe(ids.length);
    expect(operations).toContainEqual({ route: 'post /v1/send', operationId: 'sendFrames' });
  });

  it('documents a union of fixed strings as one string enum and a value or null as nullable, not as anyOf branches generators wrap in types of their own', async () => {
    ({ gateway } = build());
    await gateway.http.ready();
    const doc = (await gateway.http.inject('/docs/json')).json() as OpenApiDocument;
    const unions: string[] = [];
    const walk = (node: unknown, at: string): void => {
      if (node === null || typeof node !== 'object') return;
      const { anyOf } = node as { anyOf?: Array<{ type?: string; enum?: unknown[]; nullable?: boolean }> };
      if (anyOf?.every((b) => b.enum?.length === 1) || anyOf?.some((b) => b.nullable)) unions.push(at);
      for (const [key, value] of Object.entries(node)) walk(value, `${at}/${key}`);
    };
    walk(doc.paths, '');
    expect(unions).toEqual([]);
    const mutes = doc.paths['/v1/mutes/{chat}/{id}'] as Record<
      string,
      { parameters: Array<{ name: string }> }
    >;
    expect(mutes.put.parameters.find((p) => p.name === 'chat')).toMatchObject({
      schema: { type: 'string', enum: ['direct', 'group'] },
    });
    const list = doc.paths['/v1/mutes'] as Record<string, unknown>;
    expect(JSON.stringify(list)).toContain(
      '"until":{"description":"null: until unmuted","minimum":0,"type":"integer","format":"int64","nullable":true}',
    );
  });

  it('documents every PROTOCOL.md route with its schemas at /docs/json', async () => {
    ({ gateway } = build({ devMode: true }));
    await gateway.http.ready();
    const doc = (await gateway.http.inject('/docs/json')).json();
    // Each with the status of its success answer.
    const routes: Array<[string, string, string]> = [
      ['post', '/v1/send', '200'],
      ['get', '/v1/messages', '200'],
      ['post', '/v1/groups', '201'],
      ['get', '/v1/groups', '200'],
      ['get', '/v1/groups/{id}', '200'],
      ['post', '/v1/groups/{id}/members', '200'],
      ['delete', '/v1/groups/{id}/members/{user}', '200'],
      ['put', '/v1/devices/{deviceId}', '204'],
      ['delete', '/v1/devices/{deviceId}', '204'],
      ['get', '/v1/presence', '200'],
      ['put', '/v1/blocks/{user}', '204'],
      ['delete', '/v1/blocks/{user}', '204'],
      ['get', '/v1/blocks', '200'],
      ['delete', '/v1/account', '200'],
      ['post', '/v1/dev/token', '200'],
    ];
    // The body schema of each success answer (fastify-swagger lists a bare 200 for a route that has
    // none, so a defined `responses` proves nothing), and no body for a 204.
    const successOf = (method: string, path: string) =>
      Object.entries(
        (doc.paths[path]?.[method]?.responses ?? {}) as Record<
          string,
          { content?: Record<string, { schema?: unknown }> }
        >,
      )
        .filter(([status]) => status.startsWith('2'))
        .map(([status, answer]) => [status, answer.content?.['application/json']?.schema ?? null]);
    const body = expect.objectContaining({ type: 'object', properties: expect.any(Object) });
    expect(routes.map(([method, path]) => [method, path, successOf(method, path)])).toEqual(
      routes.map(([method, path, status]) => [method, path, [[status, status === '204' ? null : body]]]),
    );
    expect(doc.paths['/v1/send'].post.requestBody).toBeDefined();
    expect(doc.paths['/v1/messages'].get.parameters.map((p: { name: string }) => p.name)).toEqual(
      expect.arrayContaining(['after', 'limit']),
    );
    // 413 (over the body limit) where a body is taken, and only there.
    const answers413 = routes
      .filter(([method, path]) => doc.paths[path][method].responses['413'])
      .map(([method, path]) => [method, path]);
    expect(answers413).toEqual([
      ['post', '/v1/send'],
      ['post', '/v1/groups'],
      ['post', '/v1/groups/{id}/members'],
      ['put', '/v1/devices/{deviceId}'],
    ]);
    // The block routes under their own tag, the refusal past the limit documented.
    expect(
      Object.entries(doc.paths)
        .flatMap(([path, methods]) =>
          Object.entries(methods as Record<string, { tags?: string[] }>).map(([method, op]) =>
            op.tags?.includes('blocks') ? `${method} ${path}` : [],
          ),
        )
        .flat()
        .sort(),
    ).toEqual(['delete /v1/blocks/{user}', 'get /v1/blocks', 'put /v1/blocks/{user}']);
    expect(doc.paths['/v1/blocks/{user}'].put.responses['409']).toBeDefined();
    expect(doc.paths['/healthz']).toBeUndefined();
    expect((await gateway.http.inject('/docs')).statusCode).toBeLessThan(400);
  });
});
