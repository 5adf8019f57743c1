import Fastify, {
  LogController,
  FastifyBaseLogger,
  FastifyError,
  FastifyInstance,
  FastifyReply,
  FastifyRequest,
  FastifySchema,
  RawServerDefault,
} from 'fastify';
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Histogram, Registry } from 'prom-client';
import type { TSchema } from '@sinclair/typebox';
import {
  compile,
  describeInputErrors,
  ErrorCode,
  ParleyError,
  statusOf,
  withoutByteOrderMark,
} from '@parley/contracts';
import Ajv, { type ErrorObject, type ValidateFunction } from 'ajv';
import type { Logger } from 'pino';
import { Readiness } from './readiness';
import { isTransient } from './transient';
import { unavailableRetryAfterMs } from './retry-after';

/** Node's default limit on a request's line and headers together (--max-http-header-size). */
const MAX_REQUEST_HEAD_BYTES = 16 * 1024;

export interface HttpServerOptions {
  logger: Logger;
  metrics: Registry;
  readiness: Readiness;
  /** Largest accepted request body in bytes. */
  bodyLimit?: number;
  trustProxy?: boolean;
  /** How long close() waits for the requests under way before it cuts their connections (CLOSE_GRACE_MS). */
  closeGraceMs?: number;
  /** How long a connection may go without a byte read or written before it is cut (IDLE_SOCKET_MS). */
  idleSocketMs?: number;
}

/**
 * How long a closing server lets the requests under way finish: past the longest a handler waits
 * on another service (rest-gateway's UPSTREAM_TIMEOUT_MS, 10 s), well within the 25 s of
 * SHUTDOWN_TIMEOUT_MS's default, which the consumers' last commits need after it.
 */
export const CLOSE_GRACE_MS = 12_000;

/**
 * How long a connection with a request under way may go without a byte moving either way: a client
 * that stops reading its answer (gone dark, or on purpose) held the answer's buffers for good, up
 * to a MiB a sync or group page. Idle keep-alive connections end sooner (fastify's 72 s).
 */
export const IDLE_SOCKET_MS = 120_000;

export type HttpServer = FastifyInstance<
  RawServerDefault,
  IncomingMessage,
  ServerResponse,
  FastifyBaseLogger,
  TypeBoxTypeProvider
>;

/**
 * An unstarted fastify server with the probes every service has (`/healthz`, `/readyz`,
 * `/metrics`), the protocol's error body for every failure, and request metrics.
 * Tests call `inject()`; services call `listen()`.
 */
export function buildHttpServer(options: HttpServerOptions): HttpServer {
  const app = Fastify({
    loggerInstance: options.logger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: options.bodyLimit ?? 1024 * 1024,
    trustProxy: options.trustProxy ?? false,
    schemaErrorFormatter: (errors, context) => validationError(errors as ErrorObject[], context),
    // close() ends idle keep-alive connections at once and lets running requests finish (drain).
    forceCloseConnections: 'idle',
    // fastify's default is none: a client trickling a body could hold a socket for good. Node checks
    // every 30 s, so a request still incomplete after 30-60 s is answered 408 and closed.
    requestTimeout: 30_000,
    connectionTimeout: options.idleSocketMs ?? IDLE_SOCKET_MS,
    // A path segment past the ids' 64 characters reaches the schema (400 naming the param), not a 414.
    // As long as the request line itself (Node refuses more than 16 KiB of it and the headers, 431):
    // one the router refused for its length fell to the web client's files (a 404 "no route") on a
    // GET, and to the router's message echoing the whole path on the other methods.
    routerOptions: { maxParamLength: MAX_REQUEST_HEAD_BYTES },
    // A path fastify cannot decode, before any route: the protocol's error body, not fastify's own.
    frameworkErrors: (error, _request, reply) =>
      sendError(
        reply,
        'invalid_request',
        error.code === 'FST_ERR_BAD_URL'
          ? 'path: is not a valid URL (a malformed %-escape)'
          : `path: ${error.message}`,
      ),
    clientErrorHandler,
  }).withTypeProvider<TypeBoxTypeProvider>() as unknown as HttpServer;

  app.setValidatorCompiler(validatorCompiler());
  acceptJsonOnly(app);
  refuseUnmetExpectations(app);
  observeRequests(app, options.metrics);
  closeConnectionsWhenClosing(app, options.closeGraceMs ?? CLOSE_GRACE_MS);
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((request, reply) => {
    sendError(reply, 'not_found', `no route ${request.method} ${request.url.split('?')[0]}`);
  });

  const probe = { schema: { hide: true } as FastifySchema }; // kept out of the OpenAPI document
  app.get('/healthz', probe, async (_request, reply) => {
    const broken = options.readiness.broken();
    if (!broken) return { status: 'ok' };
    reply.code(503);
    return { status: 'broken', reason: broken };
  });
  app.get('/readyz', probe, async (_request, reply) => {
    const report = await options.readiness.report();
    reply.code(report.ready ? 200 : 503);
    return { status: report.ready ? 'ready' : 'not ready', checks: report.checks };
  });
  app.get('/metrics', probe, async (_request, reply) => {
    reply.header('content-type', options.metrics.contentType);
    return options.metrics.metrics();
  });
  return app;
}

/**
 * Query strings, params and headers are text, so their numbers and lists are coerced from it
 * (`?limit=5`, one `users` given once); a JSON body says what it means, so it is validated as
 * sent: `"name": 12345` or `"members": "bob"` is refused naming the field, as over the WebSocket,
 * not quietly turned into a string or a list.
 */
function validatorCompiler() {
  // addUsedSchema off (as fastify's own compiler): two routes may share a schema that has an $id.
  const options = {
    removeAdditional: false,
    useDefaults: true,
    allErrors: false,
    strict: false,
    addUsedSchema: false,
  } as const;
  const fromText = new Ajv({ ...options, coerceTypes: 'array' });
  const asSent = new Ajv({ ...options, coerceTypes: false });
  return ({ schema, httpPart }: { schema: object; httpPart?: string }) => {
    if (httpPart === 'body') return asSent.compile(schema);
    const validate = fromText.compile(schema);
    return httpPart === 'querystring' ? givenOnce(validate, schema) : validate;
  };
}

/**
 * A query parameter given twice (`?limit=5&limit=10`) is parsed as a list: refused as given twice,
 * not as a value of the wrong type (`query limit: must be integer`, of a 5 and a 10).
 */
function givenOnce(validate: ValidateFunction, schema: object) {
  const properties = (schema as { properties?: Record<string, { type?: unknown }> }).properties ?? {};
  const checked = (query: unknown, context?: Parameters<ValidateFunction>[1]) => {
    for (const [name, value] of Object.entries((query ?? {}) as Record<string, unknown>)) {
      if (Array.isArray(value) && Object.hasOwn(properties, name) && properties[name]!.type !== 'array') {
        const message = `query ${name}: must be given once (got ${value.length} values)`;
        return { error: new ParleyError('invalid_request', message) };
      }
    }
    const valid = validate(query, context);
    checked.errors = validate.errors;
    return valid;
  };
  checked.errors = undefined as ValidateFunction['errors'];
  // fastify hands the parent along (for coercions of the whole value) only to a function with this.
  checked.schemaEnv = validate.schemaEnv;
  return checked;
}

/**
 * A route's `validatorCompiler` that checks its JSON body with the contracts' validator (as the
 * WebSocket edge checks frames) rather than the server's Ajv: a union told apart by a tag (a
 * frame's `type`, a group op's `op`) is refused with one error naming the field and the tags it
 * knows, where the plain union listed every branch that failed ("must be integer or object or
 * object or …", "mid: is required; mid: is required; …"). The body and its fields are named as the
 * other routes name them. Bodies only: a query string or params need the server's coercion from text.
 */
export function contractsBodyValidator({ schema, httpPart }: { schema: unknown; httpPart?: string }) {
  if (httpPart !== 'body') throw new Error(`contractsBodyValidator checks a body, not the ${httpPart}`);
  const validate = compile(schema as TSchema, { root: 'body' });
  return (body: unknown) => {
    const checked = validate(body);
    return checked.ok
      ? { value: checked.value }
      : { error: new ParleyError('invalid_request', checked.errors.join('; ')) };
  };
}

/**
 * Bodies are JSON, parsed as `JSON.parse` does (as the WebSocket edge does: a `__proto__` key in a
 * message body is data, an own property, not refused as invalid JSON). An empty body is no body,
 * so a DELETE from a client that sends `content-type: application/json` on every request works.
 * No text/plain parser: `fetch` sends a string body as text/plain by default, and validation
 * would then be told that the client's JSON object is a string.
 */
function acceptJsonOnly(app: HttpServer): void {
  app.removeContentTypeParser('text/plain');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    const encoding = request.headers['content-encoding'];
    // Nothing here inflates a body: a compressed one would read as JSON gone wrong.
    if (encoding && encoding.toLowerCase() !== 'identity') {
      const message = `content-encoding: ${JSON.stringify(encoding)} is not supported; send the body uncompressed`;
      return done(new ParleyError('invalid_request', message), undefined);
    }
    if (body === '') return done(null, undefined);
    try {
      // A byte-order mark is no JSON, but some clients send one (fastify's own parser strips it).
      done(null, JSON.parse(withoutByteOrderMark(body as string)));
    } catch (err) {
      done(
        new ParleyError('invalid_request', `body: is not valid JSON (${(err as Error).message})`),
        undefined,
      );
    }
  });
}

/**
 * Node answers an `Expect` other than 100-continue itself, before any route, with a bare 417 (an
 * empty body): it gets the protocol's error body naming the header, as a request the parser refuses.
 */
function refuseUnmetExpectations(app: HttpServer): void {
  app.server.on('checkExpectation', (request: IncomingMessage, response: ServerResponse) => {
    const expect = JSON.stringify(request.headers.expect ?? '');
    const message = `expect: only 100-continue can be met (got ${expect}); send the request without it`;
    const body = JSON.stringify({ error: { code: 'invalid_request' satisfies ErrorCode, message } });
    response
      .writeHead(417, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
        connection: 'close',
      })
      .end(body);
  });
}

/**
 * Once close() has begun, a request still running is answered with `Connection: close`, so its
 * keep-alive connection ends with it and close() need not wait for the keep-alive timeout.
 */
function closeConnectionsWhenClosing(app: HttpServer, graceMs: number): void {
  let closing = false;
  let cut: NodeJS.Timeout | undefined;
  app.addHook('preClose', async () => {
    closing = true;
    // Node times a request out (requestTimeout) only while its server listens: a request half sent
    // when close() began (a phone gone dark mid-upload) held close() until the process's shutdown
    // deadline, which then exited 1 before the consumers' last commits. Cut once the grace is over.
    cut = setTimeout(() => app.server.closeAllConnections(), graceMs).unref();
  });
  app.addHook('onClose', async () => clearTimeout(cut));
  app.addHook('onSend', async (_request, reply) => {
    if (closing) reply.header('connection', 'close');
  });
}

/**
 * A request Node's HTTP parser refuses (Content-Length with Transfer-Encoding, a bad chunk size,
 * headers past the limit), or one not complete in time, never reaches a route: it gets the
 * protocol's error body naming what was wrong too, not fastify's `{"error":"Bad Request","message":"Client Error"}`.
 */
function clientErrorHandler(
  this: FastifyInstance,
  err: Error & { code?: string; reason?: string },
  socket: Duplex,
): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return; // nobody left to answer
  const [status, code, message]: [number, ErrorCode, string] =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'too_large', 'headers: are larger than allowed']
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'invalid_request', 'request: did not arrive in full in time']
        : [400, 'invalid_request', `request: is not valid HTTP/1.1 (${err.reason ?? err.message})`];
  this.log.debug({ err }, 'refused a malformed request');
  if (socket.writable) socket.write(rawErrorResponse(status, code, message));
  socket.destroy(err);
}

/**
 * An HTTP/1.1 answer with the protocol's error body, for writing straight to a socket where there
 * is no fastify reply (a request the parser refused, a refused WebSocket upgrade).
 */
export function rawErrorResponse(status: number, code: ErrorCode, message: string): string {
  const body = JSON.stringify({ error: { code, message } });
  const retryAfter = retryAfterHeader(code);
  return (
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\nContent-Type: application/json\r\n` +
    (retryAfter === undefined ? '' : `Retry-After: ${retryAfter}\r\n`) +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
  );
}

/**
 * Answer with the protocol's error body: `{"error":{"code","message"}}`. A refusal to wait out
 * carries `Retry-After`: `rate_limited` the time given, `unavailable` a short spread one.
 */
export function sendError(reply: FastifyReply, code: ErrorCode, message: string, retryAfterSeconds?: number) {
  const retryAfter = retryAfterHeader(code, retryAfterSeconds);
  if (retryAfter !== undefined) reply.header('retry-after', retryAfter);
  return reply.code(statusOf(code)).send({ error: { code, message } });
}

/** Whole seconds (HTTP has no finer `Retry-After`): a wait given is rounded up, the spread one to the nearest. */
function retryAfterHeader(code: ErrorCode, seconds?: number): string | undefined {
  if (seconds !== undefined) return String(Math.max(1, Math.ceil(seconds)));
  if (code === 'unavailable') return String(Math.round(unavailableRetryAfterMs() / 1000));
  return undefined;
}

function validationError(errors: ErrorObject[], context: string): Error {
  return new ParleyError('invalid_request', describeInputErrors(errors, context));
}

const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'too_large',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'invalid_request',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'invalid_request',
};

function errorHandler(
  this: unknown,
  error: FastifyError | ParleyError,
  request: FastifyRequest,
  reply: FastifyReply,
) {
  if (error instanceof ParleyError) {
    return sendError(reply, error.code, error.message, error.details?.retryAfterSeconds);
  }
  const mapped = error.code ? FASTIFY_CODES[error.code] : undefined;
  if (mapped) return sendError(reply, mapped, describeFastifyError(error, request));
  if (error.statusCode === 429) return sendError(reply, 'rate_limited', error.message);
  if (error.statusCode && error.statusCode >= 400 && error.statusCode < 500) {
    return sendError(reply, 'invalid_request', error.message);
  }
  if (isTransient(error)) {
    request.log.warn({ err: error, url: request.url }, 'a dependency is unavailable');
    return sendError(reply, 'unavailable', 'a dependency is unavailable; try again');
  }
  request.log.error({ err: error, url: request.url }, 'request failed');
  return sendError(reply, 'internal', 'internal error');
}

function describeFastifyError(error: FastifyError, request: FastifyRequest): string {
  if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return bodyTooLarge(request);
  if (error.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE')
    return 'content-type: must be application/json (send the header content-type: application/json)';
  return error.message;
}

/** The limit, as a frame refused for its size names it, and the size where the request declared one. */
function bodyTooLarge(request: FastifyRequest): string {
  const declared = Number(request.headers['content-length']);
  const got = Number.isSafeInteger(declared) && declared > 0 ? ` (got ${declared})` : '';
  return `body: must be at most ${request.routeOptions.bodyLimit} bytes${got}`;
}

function observeRequests(app: HttpServer, registry: Registry) {
  const name = 'parley_http_request_duration_seconds';
  // A service with two servers (public and internal) shares one histogram.
  const duration =
    (registry.getSingleMetric(name) as Histogram | undefined) ??
    new Histogram({
      name,
      help: 'HTTP request duration by route and status',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    });
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unknown';
    if (route === '/metrics' || route === '/healthz' || route === '/readyz') return;
    duration.observe(
      { method: request.method, route, status: String(reply.statusCode) },
      reply.elapsedTime / 1000,
    );
  });
}
