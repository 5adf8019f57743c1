import net, { AddressInfo } from 'node:net';
import { Type } from '@sinclair/typebox';
import { ParleyError } from '@parley/contracts';
import {
  buildHttpServer,
  contractsBodyValidator,
  createMetricsRegistry,
  internalHeaders,
  Readiness,
  requireInternalSecret,
  rawErrorResponse,
  silentLogger,
  unavailableRetryAfterMs,
} from '@parley/service-kit';

function build(readiness = new Readiness(200), closeGraceMs?: number, idleSocketMs?: number) {
  const app = buildHttpServer({
    logger: silentLogger(),
    metrics: createMetricsRegistry('test', { collectDefaults: false }),
    readiness,
    bodyLimit: 100,
    closeGraceMs,
    idleSocketMs,
  });
  app.post(
    '/echo',
    {
      schema: {
        body: Type.Object({ name: Type.String({ minLength: 1 }), n: Type.Optional(Type.Integer()) }),
      },
    },
    async (req) => req.body,
  );
  app.get(
    '/page',
    { schema: { querystring: Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 1 })) }) } },
    async (req) => req.query,
  );
  app.get('/teapot', async () => {
    throw new ParleyError('rate_limited', 'slow down', { retryAfterSeconds: 3 });
  });
  app.get('/boom', async () => {
    throw new Error('secret internals');
  });
  app.get('/db-down', async () => {
    throw Object.assign(new Error('connect ECONNREFUSED 10.0.0.5:5432'), { code: 'ECONNREFUSED' });
  });
  return app;
}

describe('buildHttpServer', () => {
  const afterClose: Array<() => Promise<unknown>> = [];
  afterEach(() => Promise.all(afterClose.splice(0).map((close) => close())));

  it('answers /healthz', async () => {
    const app = build();
    const res = await app.inject('/healthz');
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ status: 'ok' });
    await app.close();
  });

  it('answers /readyz with 503 while a dependency check fails, 200 when it passes', async () => {
    const readiness = new Readiness(100);
    let up = false;
    readiness.register('kafka', () => {
      if (!up) throw new Error('broker unreachable');
    });
    readiness.register('slow', () => new Promise((resolve) => setTimeout(resolve, 10)));
    const app = build(readiness);
    const down = await app.inject('/readyz');
    expect(down.statusCode).toBe(503);
    expect(down.json()).toEqual({ status: 'not ready', checks: { kafka: 'broker unreachable', slow: 'ok' } });
    up = true;
    const ready = await app.inject('/readyz');
    expect(ready.statusCode).toBe(200);
    readiness.markDraining();
    expect((await app.inject('/readyz')).statusCode).toBe(503);
    await app.close();
  });

  it('fails /healthz and /readyz with the reason once the process is marked broken (the first reason stands)', async () => {
    const readiness = new Readiness(100);
    readiness.register('kafka', () => undefined);
    const app = build(readiness);
    readiness.markBroken('the consumer of t (group g) stopped for good: protocols incompatible');
    readiness.markBroken('a later reason');
    const health = await app.inject('/healthz');
    expect(health.statusCode).toBe(503);
    expect(health.json()).toEqual({
      status: 'broken',
      reason: 'the consumer of t (group g) stopped for good: protocols incompatible',
    });
    const ready = await app.inject('/readyz');
    expect(ready.statusCode).toBe(503);
    expect(ready.json()).toEqual({
      status: 'not ready',
      checks: { kafka: 'ok', broken: 'the consumer of t (group g) stopped for good: protocols incompatible' },
    });
    await app.close();
  });

  it('reports a hanging check as timed out', async () => {
    const readiness = new Readiness(50);
    readiness.register('hang', () => new Promise(() => undefined));
    // A check that knows why it is late (a client retrying a dependency that is away) says so.
    readiness.register(
      'kafka',
      () => new Promise(() => undefined),
      () => 'unreachable for 12 s (ECONNREFUSED)',
    );
    const app = build(readiness);
    const res = await app.inject('/readyz');
    expect(res.json().checks).toEqual({
      hang: 'timed out after 50 ms',
      kafka: 'timed out after 50 ms: unreachable for 12 s (ECONNREFUSED)',
    });
    await app.close();
  });

  it('serves Prometheus metrics including request durations', async () => {
    const app = build();
    await app.inject({ method: 'POST', url: '/echo', payload: { name: 'x' } });
    const res = await app.inject('/metrics');
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toContain('text/plain');
    expect(res.body).toContain(
      'parley_http_request_duration_seconds_count{service="test",method="POST",route="/echo",status="200"} 1',
    );
    await app.close();
  });

  it('answers validation failures with the field and reason', async () => {
    const app = build();
    const res = await app.inject({ method: 'POST', url: '/echo', payload: { n: 'x' } });
    expect(res.statusCode).toBe(400);
    expect(res.json()).toEqual({ error: { code: 'invalid_request', message: 'name: is required' } });
    await app.close();
  });

  it("names the body and its fields alike whether the server or contractsBodyValidator checks it; the latter names a union's tags", async () => {
    const app = build();
    const Op = Type.Union([
      Type.Object({ op: Type.Literal('add'), name: Type.String() }),
      Type.Object({ op: Type.Literal('drop'), id: Type.Integer() }),
    ]);
    const body = Type.Object({ name: Type.String({ minLength: 1 }), ops: Type.Optional(Type.Array(Op)) });
    app.post(
      '/contracts-echo',
      { schema: { body }, validatorCompiler: contractsBodyValidator },
      async (req) => req.body,
    );
    const message = async (url: string, payload: unknown) => {
      const res = await app.inject({ method: 'POST', url, payload: payload as object });
      return [res.statusCode, res.json().error?.message];
    };
    for (const url of ['/echo', '/contracts-echo']) {
      expect(await message(url, [{ name: 'x' }])).toEqual([400, 'body: must be object']);
      expect(await message(url, { name: 7 })).toEqual([400, 'name: must be string']);
    }
    expect(await message('/contracts-echo', { name: 'x', ops: [{ op: 'drop', id: 'one' }] })).toEqual([
      400,
      'ops[0].id: must be integer',
    ]);
    expect(await message('/contracts-echo', { name: 'x', ops: [{ op: 'nope' }] })).toEqual([
      400,
      'ops[0].op: must be one of "add", "drop"',
    ]);
    await app.close();
    const queried = build();
    queried.get(
      '/q',
      { schema: { querystring: body }, validatorCompiler: contractsBodyValidator },
      async () => 'x',
    );
    await expect(queried.ready()).rejects.toThrow(
      'contractsBodyValidator checks a body, not the querystring',
    );
  });

  it('refuses a query parameter given twice as such, not as a value of the wrong type', async () => {
    const app = build();
    const twice = await app.inject('/page?limit=5&limit=10');
    expect([twice.statusCode, twice.json()]).toEqual([
      400,
      { error: { code: 'invalid_request', message: 'query limit: must be given once (got 2 values)' } },
    ]);
    // Once, it is read and coerced as before; one the schema does not name may come as often as it likes.
    const once = await app.inject('/page?limit=5&x=1&x=2');
    expect([once.statusCode, once.json()]).toEqual([200, { limit: 5, x: ['1', '2'] }]);
    const bad = await app.inject('/page?limit=five');
    expect(bad.json()).toEqual({
      error: { code: 'invalid_request', message: 'query limit: must be integer' },
    });
    await app.close();
  });

  it('maps errors to the protocol body: 413, 429 with Retry-After, 404, 400 bad JSON, 503 for a dependency down, 500 without internals', async () => {
    const app = build();
    const big = await app.inject({ method: 'POST', url: '/echo', payload: { name: 'x'.repeat(200) } });
    expect(big.statusCode).toBe(413);
    // The limit named, as for a frame refused for its size: an app cannot look it up otherwise.
    expect(big.json()).toEqual({
      error: {
        code: 'too_large',
        message: `body: must be at most 100 bytes (got ${Buffer.byteLength(JSON.stringify({ name: 'x'.repeat(200) }))})`,
      },
    });
    const limited = await app.inject('/teapot');
    expect(limited.statusCode).toBe(429);
    expect(limited.headers['retry-after']).toBe('3');
    expect(limited.json()).toEqual({ error: { code: 'rate_limited', message: 'slow down' } });
    const missing = await app.inject('/nope?x=1');
    expect(missing.json()).toEqual({ error: { code: 'not_found', message: 'no route GET /nope' } });
    const badJson = await app.inject({
      method: 'POST',
      url: '/echo',
      payload: '{"name":',
      headers: { 'content-type': 'application/json' },
    });
    expect(badJson.statusCode).toBe(400);
    expect(badJson.json().error.message).toContain('body: is not valid JSON');
    const untyped = await app.inject({
      method: 'POST',
      url: '/echo',
      payload: 'name=x',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    expect([untyped.statusCode, untyped.json().error]).toEqual([
      400,
      { code: 'invalid_request', message: expect.stringContaining('content-type: must be application/json') },
    ]);
    const { gzipSync } = await import('node:zlib');
    const compressed = await app.inject({
      method: 'POST',
      url: '/echo',
      payload: gzipSync('{"name":"x"}'),
      headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
    });
    expect([compressed.statusCode, compressed.json().error]).toEqual([
      400,
      {
        code: 'invalid_request',
        message: 'content-encoding: "gzip" is not supported; send the body uncompressed',
      },
    ]);
    const identity = await app.inject({
      method: 'POST',
      url: '/echo',
      payload: '{"name":"x"}',
      headers: { 'content-type': 'application/json', 'content-encoding': 'identity' },
    });
    expect(identity.statusCode).toBe(200);
    const boom = await app.inject('/boom');
    expect(boom.statusCode).toBe(500);
    expect(boom.body).not.toContain('secret internals');
    const down = await app.inject('/db-down');
    expect([down.statusCode, down.json()]).toEqual([
      503,
      { error: { code: 'unavailable', message: 'a dependency is unavailable; try again' } },
    ]);
    expect(['1', '2']).toContain(down.headers['retry-after']);
    expect(boom.headers['retry-after']).toBeUndefined();
    expect(big.headers['retry-after']).toBeUndefined();
    await app.close();
  });

  it('tells a client refused unavailable to come back after 1 or 2 s, spread at random, on a raw answer too', () => {
    expect([0, 0.49, 0.5, 0.999].map((r) => unavailableRetryAfterMs(() => r))).toEqual([
      1000, 1490, 1500, 1999,
    ]);
    expect(rawErrorResponse(503, 'unavailable', 'this gateway is full; try another')).toMatch(
      /\r\nRetry-After: [12]\r\n/,
    );
    expect(rawErrorResponse(400, 'invalid_request', 'bad')).not.toContain('Retry-After');
  });

  it('refuses an internal route without the secret however its path is spelled', async () => {
    const app = build();
    requireInternalSecret(app, 'internal-secret-for-tests');
    app.get('/internal/groups', async () => ({ ok: true }));
    for (const url of [
      '/internal/groups',
      '/%69nternal/groups',
      '/internal/%67roups',
      '/internal/groups?x=1',
    ]) {
      const refused = await app.inject(url);
      expect([url, refused.statusCode, refused.json().error?.code]).toEqual([url, 403, 'forbidden']);
    }
    const allowed = await app.inject({
      url: '/%69nternal/groups',
      headers: internalHeaders('internal-secret-for-tests'),
    });
    expect(allowed.json()).toEqual({ ok: true });
    expect((await app.inject('/teapot')).statusCode).toBe(429); // other routes need no secret
    await app.close();
  });

  it("answers a request Node's HTTP parser refuses with the protocol body naming what was wrong", async () => {
    const app = build();
    await app.listen({ port: 0, host: '127.0.0.1' });
    afterClose.push(() => app.close());
    const { port } = app.server.address() as AddressInfo;
    const answer = (request: string) =>
      new Promise<{ status: number; body: unknown }>((resolve) => {
        let text = '';
        const socket = net.connect(port, '127.0.0.1', () => socket.write(request));
        socket.on('data', (chunk: Buffer) => (text += chunk.toString()));
        socket.on('error', () => undefined);
        socket.on('close', () => {
          const [head, body] = text.split('\r\n\r\n');
          resolve({ status: Number(head!.split(' ')[1]), body: JSON.parse(body!) });
        });
      });
    const post = 'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n';
    expect(
      await answer(`${post}Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n`),
    ).toEqual({
      status: 400,
      body: {
        error: {
          code: 'invalid_request',
          message: "request: is not valid HTTP/1.1 (Transfer-Encoding can't be present with Content-Length)",
        },
      },
    });
    expect(await answer(`${post}Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`)).toEqual({
      status: 400,
      body: {
        error: {
          code: 'invalid_request',
          message: 'request: is not valid HTTP/1.1 (Invalid character in chunk size)',
        },
      },
    });
    expect(await answer(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`)).toEqual({
      status: 431,
      body: { error: { code: 'too_large', message: 'headers: are larger than allowed' } },
    });
  });

  it('answers an Expect other than 100-continue with the protocol body naming the header', async () => {
    const app = build();
    await app.listen({ port: 0, host: '127.0.0.1' });
    afterClose.push(() => app.close());
    const { port } = app.server.address() as AddressInfo;
    const text = await new Promise<string>((resolve) => {
      let received = '';
      const socket = net.connect(port, '127.0.0.1', () =>
        socket.write(
          'POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n' +
            'Expect: 200-ok\r\nContent-Length: 12\r\n\r\n{"name":"a"}',
        ),
      );
      socket.on('data', (chunk: Buffer) => (received += chunk.toString()));
      socket.on('error', () => undefined);
      socket.on('close', () => resolve(received));
    });
    const [head, body] = text.split('\r\n\r\n');
    expect([head!.split('\r\n')[0], JSON.parse(body!)]).toEqual([
      'HTTP/1.1 417 Expectation Failed',
      {
        error: {
          code: 'invalid_request',
          message: 'expect: only 100-continue can be met (got "200-ok"); send the request without it',
        },
      },
    ]);
  });

  it('lets a running request finish when the server closes, and closes idle connections', async () => {
    const app = build();
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let started!: () => void;
    const running = new Promise<void>((resolve) => (started = resolve));
    app.get('/slow', async () => {
      started();
      await released;
      return { done: true };
    });
    const address = await app.listen({ port: 0, host: '127.0.0.1' });
    await fetch(`${address}/healthz`); // leaves an idle keep-alive connection behind
    const slow = fetch(`${address}/slow`).then(async (res) => ({
      status: res.status,
      body: await res.json(),
    }));
    await running;
    let closed = false;
    const closing = app.close().then(() => (closed = true));
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(closed).toBe(false);
    release();
    expect(await slow).toEqual({ status: 200, body: { done: true } });
    await closing;
    expect(closed).toBe(true);
  });

  it('cuts a request still half sent when the close grace is over (a phone gone dark mid-upload), instead of waiting for it for good', async () => {
    const app = build(new Readiness(200), 300);
    const address = (await app.listen({ port: 0, host: '127.0.0.1' })) as string;
    const socket = net.connect(Number(new URL(address).port), '127.0.0.1');
    afterClose.push(async () => socket.destroy());
    await new Promise((resolve) => socket.once('connect', resolve));
    const ended = new Promise((resolve) => socket.once('close', resolve));
    socket.write(
      'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{"name":',
    );
    await new Promise((resolve) => setTimeout(resolve, 50)); // the headers are read: a request under way
    const startedAt = Date.now();
    const closed = await Promise.race([
      app.close().then(() => true),
      new Promise((resolve) => setTimeout(() => resolve(false), 3000)),
    ]);
    expect(closed).toBe(true);
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(250); // it had its grace
    await ended;
  });

  it('cuts a connection whose client stopped reading its answer once nothing moved for idleSocketMs, and keeps one that reads', async () => {
    const app = build(new Readiness(200), undefined, 500);
    const answer = 'x'.repeat(32 * 1024 * 1024); // past what the two sockets' buffers hold
    app.get('/big', async (_request, reply) => reply.type('text/plain').send(answer));
    const address = (await app.listen({ port: 0, host: '127.0.0.1' })) as string;
    const fetchBig = async (readAfterMs: number) => {
      const socket = net.connect(Number(new URL(address).port), '127.0.0.1');
      afterClose.push(async () => socket.destroy());
      await new Promise((resolve) => socket.once('connect', resolve));
      socket.pause();
      socket.write('GET /big HTTP/1.1\r\nHost: x\r\n\r\n');
      await new Promise((resolve) => setTimeout(resolve, readAfterMs));
      let received = 0;
      socket.on('data', (chunk: Buffer) => (received += chunk.length));
      socket.on('error', () => {}); // a cut may come as a reset
      socket.resume();
      const closed = await Promise.race([
        new Promise((resolve) => socket.once('close', () => resolve(true))),
        new Promise((resolve) => setTimeout(() => resolve(false), 3000).unref()),
      ]);
      return { closed, whole: received >= answer.length };
    };
    expect(await fetchBig(0)).toEqual({ closed: false, whole: true }); // keep-alive: stays open
    expect(await fetchBig(1500)).toEqual({ closed: true, whole: false });
    await app.close();
  });
});
