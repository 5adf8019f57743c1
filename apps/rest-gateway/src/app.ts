import cors from '@fastify/cors';
import rateLimit from '@fastify/rate-limit';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { Type, TSchema } from '@sinclair/typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Counter, Registry } from 'prom-client';
import {
  AccountErased,
  AddMembersBody,
  compile,
  CreateGroupBody,
  DeviceParams,
  DevTokenBody,
  DevTokenResponse,
  ErasedCount,
  ErrorBody,
  Group,
  GroupList,
  GroupListQuery,
  GroupMemberParams,
  GroupParams,
  InboundEvent,
  MAX_REST_BODY_BYTES,
  nestingRefusal,
  MaxFrameBytesSetting,
  jsonDepth,
  MAX_BODY_DEPTH,
  ParleyError,
  PresenceQuery,
  PresenceResponse,
  RegisterDeviceBody,
  SendRequest,
  SendResponse,
  SendResult,
  SyncQuery,
  SyncResponse,
  TOPICS,
  userMid,
  clientIdOf,
  validateSendableFrame,
  withoutIds,
} from '@parley/contracts';
import { EventBus, KafkaSettingsSchema } from '@parley/kafka';
import {
  AuthConfig,
  bearerToken,
  buildHttpServer,
  CommonConfig,
  frameBudgets,
  HttpServer,
  InternalConfig,
  issueToken,
  KeyedFrameBudgets,
  PublishBudget,
  PublishBudgetConfig,
  rateLimitedRefusal,
  Runtime,
  Service,
  TokenBucket,
  TokenVerifier,
  serviceUrl,
} from '@parley/service-kit';
import { UpstreamName, Upstreams } from './upstream';

const DEFAULT_SEND_FRAMES_PER_SECOND = 20;
const DEFAULT_SEND_FRAMES_BURST = 200;

export const RestGatewayConfig = Type.Object({
  ...CommonConfig,
  ...KafkaSettingsSchema,
  ...InternalConfig,
  ...AuthConfig,
  ...PublishBudgetConfig,
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 8081 }),
  DEV_MODE: Type.Boolean({ default: false, description: 'Serves POST /v1/dev/token (never in production)' }),
  PERSISTENCE_URL: serviceUrl({ default: 'http://127.0.0.1:9105' }),
  GROUP_URL: serviceUrl({ default: 'http://127.0.0.1:9104' }),
  PUSH_URL: serviceUrl({ default: 'http://127.0.0.1:9106' }),
  SESSION_URL: serviceUrl({ default: 'http://127.0.0.1:9103' }),
  CORS_ORIGINS: Type.String({
    default: '',
    description: 'Comma-separated allowed origins; empty disables CORS',
  }),
  RATE_LIMIT_PER_MINUTE: Type.Integer({
    minimum: 1,
    default: 600,
    description:
      'Requests per user per minute, counted by each replica on its own (behind a load balancer a user gets up to this times the replicas)',
  }),
  SEND_FRAMES_PER_SECOND: Type.Number({
    minimum: 0.1,
    default: DEFAULT_SEND_FRAMES_PER_SECOND,
    description:
      'Frames a user may send through POST /v1/send per second, counted by each replica on its own (acks ten times that); past it a frame is rejected rate_limited',
  }),
  SEND_FRAMES_BURST: Type.Integer({ minimum: 1, default: DEFAULT_SEND_FRAMES_BURST }),
  MAX_FRAME_BYTES: MaxFrameBytesSetting,
  WEB_CLIENT: Type.Boolean({
    default: true,
    description: 'Serves the browser demo client at / (static files, public protocol only)',
  }),
  PUBLIC_WS_URL: Type.String({
    default: '',
    description: 'WebSocket URL the web client connects to; empty: port 8080 on the host the page came from',
  }),
  WEB_CLIENT_DIR: Type.String({
    default: '',
    description: 'Folder of the web client files; empty: found next to the code (apps/web-client/public)',
  }),
});

export interface RestGatewayDeps extends Omit<Runtime, 'closer'> {
  bus: EventBus;
  upstreams: Upstreams;
  verifyToken: TokenVerifier;
  settings: {
    devMode: boolean;
    /** Signs dev tokens (dev mode only). */
    devTokenSecret?: string;
    corsOrigins: string[];
    rateLimitPerMinute: number;
    /** Frames a user may send through /v1/send per second (acks ten times that); default 20, burst 200. */
    sendFramesPerSecond?: number;
    sendFramesBurst?: number;
    maxFrameBytes: number;
    /** Bytes of client frames waiting for Kafka at once; default 64 MiB. */
    maxPendingPublishBytes?: number;
  };
  port: number;
  host?: string;
  /** Extra routes on the same server (the web client's static files). */
  plugins?: Array<(app: FastifyInstance) => Promise<void>>;
}

export interface RestGateway extends Service {
  http: HttpServer;
}

declare module 'fastify' {
  interface FastifyRequest {
    user: string;
  }
}

const s = <T extends TSchema>(schema: T): T => withoutIds(schema);
const errors = {
  400: s(ErrorBody),
  401: s(ErrorBody),
  403: s(ErrorBody),
  404: s(ErrorBody),
  429: s(ErrorBody),
  503: s(ErrorBody),
};
/** A route that takes a body also answers 413 (over the body limit). */
const bodyErrors = { ...errors, 413: s(ErrorBody) };
const secured = [{ bearer: [] as string[] }];

export function createRestGateway(deps: RestGatewayDeps): RestGateway {
  const { settings } = deps;
  const http = buildHttpServer({ ...deps, bodyLimit: MAX_REST_BODY_BYTES });
  http.decorateRequest('user', '');

  void http.register(swagger, {
    openapi: {
      info: {
        title: 'Parley REST API',
        version: '1',
        description: 'The public REST edge of Parley (see docs/protocol.md).',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } } },
    },
  });
  void http.register(swaggerUi, { routePrefix: '/docs' });
  if (settings.corsOrigins.length > 0)
    void http.register(cors, {
      origin: settings.corsOrigins,
      // @fastify/cors allows only GET, HEAD and POST by default: a browser would be refused the
      // device routes (PUT, DELETE) and leaving a group (DELETE).
      methods: ['GET', 'HEAD', 'POST', 'PUT', 'DELETE'],
      // Not a CORS-safelisted response header: unexposed, a script could not read a 429's wait.
      exposedHeaders: ['Retry-After'],
      maxAge: 600,
    });

  void http.register(async (api) => {
    api.addHook('onRequest', async (request: FastifyRequest) => {
      request.user = (await deps.verifyToken(bearerToken(request.headers.authorization))).user;
    });
    await api.register(rateLimit, {
      max: settings.rateLimitPerMinute,
      timeWindow: 60_000,
      // Before the body is read (after the onRequest hook above named the user): a request refused
      // as invalid still cost a parse of up to 1 MiB, and counted at preHandler it never counted.
      hook: 'preParsing',
      keyGenerator: (request) => request.user,
      errorResponseBuilder: (_request, context) => {
        // context.after is the time left in the window, not the window (a minute).
        const seconds = Math.max(1, Math.ceil(context.ttl / 1000));
        return new ParleyError(
          'rate_limited',
          `rate limit of ${context.max} requests a minute reached; retry after ${seconds} second${seconds === 1 ? '' : 's'}`,
          { retryAfterSeconds: context.ttl / 1000 },
        );
      },
    });
    const sendBudgets = new KeyedFrameBudgets(() =>
      frameBudgets(
        settings.sendFramesPerSecond ?? DEFAULT_SEND_FRAMES_PER_SECOND,
        settings.sendFramesBurst ?? DEFAULT_SEND_FRAMES_BURST,
      ),
    );
    const publishBudget = new PublishBudget(deps.metrics, 'parley_rest', settings.maxPendingPublishBytes);
    sendRoute(api, deps, { publishBudget, sendBudgets, counters: sendCounters(deps.metrics) });
    proxyRoutes(api, deps.upstreams);
  });

  if (settings.devMode && settings.devTokenSecret) {
    const secret = settings.devTokenSecret;
    // Inside a plugin, like every route, so the OpenAPI document (registered first) sees it.
    void http.register(async (dev) => {
      dev.post(
        '/v1/dev/token',
        {
          schema: {
            tags: ['dev'],
            description: 'Dev mode only: a token for any user',
            body: s(DevTokenBody),
            response: { 200: s(DevTokenResponse), 400: s(ErrorBody) },
          },
        },
        async (request) => ({ token: await issueToken(secret, (request.body as DevTokenBody).user) }),
      );
    });
  }
  for (const plugin of deps.plugins ?? []) void http.register(plugin);

  return {
    http,
    async start() {
      await http.listen({ port: deps.port, host: deps.host ?? '0.0.0.0' });
    },
    async stop() {
      deps.readiness.markDraining();
      await http.close();
    },
  };
}

/** What POST /v1/send answered, frame by frame: as the ws-gateway's frames and refusals. */
function sendCounters(metrics: Registry) {
  return {
    accepted: new Counter({
      name: 'parley_rest_frames_total',
      help: 'Frames of POST /v1/send accepted (Kafka has them), by type',
      labelNames: ['type'],
      registers: [metrics],
    }),
    rejected: new Counter({
      name: 'parley_rest_rejected_total',
      help: 'Frames of POST /v1/send rejected, by error code',
      labelNames: ['code'],
      registers: [metrics],
    }),
  };
}

/** `POST /v1/send`: the WebSocket's semantics over HTTP, one frame or up to 100. */
function sendRoute(
  api: FastifyInstance,
  deps: RestGatewayDeps,
  {
    publishBudget,
    sendBudgets,
    counters,
  }: {
    publishBudget: PublishBudget;
    sendBudgets: KeyedFrameBudgets;
    counters: ReturnType<typeof sendCounters>;
  },
) {
  api.post(
    '/v1/send',
    {
      schema: {
        tags: ['messages'],
        description:
          'Send one client frame (`message`, `ack`, `read`, `group`) or an array of up to 100. Each is accepted once Kafka has it, or rejected with a code.',
        security: secured,
        body: s(SendRequest),
        response: { 200: s(SendResponse), ...bodyErrors },
      },
      // Before validation, whose type coercion would make a lone string or null a batch of one.
      preValidation: async (request) => {
        const body = request.body;
        if (body !== null && typeof body === 'object') return;
        const got = body === undefined ? 'no body' : body === null ? 'null' : `a ${typeof body}`;
        throw new ParleyError(
          'invalid_request',
          `body: must be a frame (a JSON object) or an array of frames (got ${got})`,
        );
      },
    },
    async (request) => {
      const items = Array.isArray(request.body) ? (request.body as unknown[]) : [request.body];
      const results: SendResult[] = [];
      const accepted: Array<{ result: SendResult & { status: 'accepted' }; event: InboundEvent }> = [];
      const sentAt = Date.now();
      const budgets = sendBudgets.of(request.user);
      const spent = new Set<TokenBucket>();
      items.forEach((item, index) => {
        // Serializing a frame nested thousands deep would overflow the stack: validation refuses it below.
        const tooDeep = jsonDepth(item, MAX_BODY_DEPTH + 2) > MAX_BODY_DEPTH + 1; // the frame's level + its body's
        const size = tooDeep ? 0 : Buffer.byteLength(JSON.stringify(item));
        const id =
          typeof (item as { id?: unknown })?.id === 'string' ? (item as { id: string }).id : undefined;
        if (size > deps.settings.maxFrameBytes) {
          results.push({
            index,
            status: 'rejected',
            ...(id !== undefined ? { id } : {}),
            code: 'too_large',
            message: `frame: must be at most ${deps.settings.maxFrameBytes} bytes (got ${size})`,
          });
          return;
        }
        const parsed = validateSendableFrame(item);
        if (!parsed.ok) {
          results.push({
            index,
            status: 'rejected',
            ...(parsed.id !== undefined ? { id: parsed.id } : {}),
            code: parsed.code,
            message: parsed.message,
          });
          return;
        }
        const frame = parsed.frame;
        const frameId = clientIdOf(frame);
        const bucket = frame.type === 'ack' ? budgets.acks : budgets.frames;
        // Once a frame is refused, so is every later one of its budget in this request, even if a
        // token came meanwhile: a resend of the refused ones then keeps the sender's order.
        if (spent.has(bucket) || !bucket.take()) {
          spent.add(bucket);
          const id = frameId !== undefined ? { id: frameId } : {};
          results.push({
            index,
            status: 'rejected',
            ...id,
            code: 'rate_limited',
            ...rateLimitedRefusal(bucket),
          });
          return;
        }
        const result: SendResult & { status: 'accepted' } =
          frameId !== undefined
            ? { index, status: 'accepted', id: frameId, mid: userMid(request.user, frameId) }
            : { index, status: 'accepted' };
        accepted.push({ result, event: { v: 1, kind: 'inbound', from: request.user, sentAt, frame } });
        results.push(result);
      });
      if (accepted.length > 0) {
        const events = accepted.map((a) => a.event);
        // Nothing is accepted after all: the client is told to send them again, at no cost.
        const giveBack = () => {
          for (const event of events) (event.frame.type === 'ack' ? budgets.acks : budgets.frames).giveBack();
        };
        let held: boolean;
        try {
          held = await publishBudget.hold(
            Buffer.byteLength(JSON.stringify(events)),
            events.length,
            () => deps.bus.publish(TOPICS.inbound, events),
            events.every((e) => e.frame.type === 'ack'),
          );
        } catch (err) {
          request.log.warn({ err }, 'publishing frames failed');
          giveBack();
          throw new ParleyError(
            'unavailable',
            'the frames could not be stored; nothing was accepted, send them again',
          );
        }
        if (!held) {
          giveBack();
          throw new ParleyError(
            'unavailable',
            'the gateway is waiting on storage; nothing was accepted, send them again later',
          );
        }
      }
      for (const { event } of accepted) counters.accepted.inc({ type: event.frame.type });
      for (const result of results)
        if (result.status === 'rejected') counters.rejected.inc({ code: result.code });
      return { results };
    },
  );
}

/** The routes another service owns: authenticate here, then call its internal API as the user. */
function proxyRoutes(api: FastifyInstance, upstreams: Upstreams) {
  const forward =
    (service: UpstreamName, method: string, path: (request: FastifyRequest) => string, withBody = false) =>
    async (request: FastifyRequest, reply: import('fastify').FastifyReply) => {
      if (withBody) assertShallow(request.body);
      const upstream = await upstreams.call(service, {
        method,
        path: path(request),
        user: request.user,
        body: withBody ? request.body : undefined,
        success: documentedSuccess(request),
      });
      return reply.code(upstream.status).send(upstream.body);
    };
  type P = { id: string; user: string; deviceId: string };
  /** The path parameters, each fit to be one segment of the upstream's path. */
  const params = (request: FastifyRequest) => {
    const values = request.params as P;
    for (const [name, value] of Object.entries(values)) assertPathSegment(name, value);
    return values;
  };
  // Only the keys the route's schema names: one it does not take (a cache-buster, a header's name)
  // is no business of the upstream's.
  const query = (request: FastifyRequest) => {
    const known = (request.routeOptions.schema?.querystring as { properties?: object } | undefined)
      ?.properties;
    const given = request.query as Record<string, string>;
    const taken = Object.keys(given).filter((key) => Object.hasOwn(known ?? {}, key));
    return new URLSearchParams(taken.map((key): [string, string] => [key, String(given[key])])).toString();
  };

  api.get(
    '/v1/messages',
    {
      schema: {
        tags: ['messages'],
        description: 'What the user has not acked yet, oldest first',
        security: secured,
        querystring: s(SyncQuery),
        response: { 200: s(SyncResponse), ...errors },
      },
    },
    forward('persistence-ms', 'GET', (r) => `/internal/messages?${query(r)}`),
  );

  const groupSchema = { tags: ['groups'], security: secured };
  api.post(
    '/v1/groups',
    {
      schema: {
        ...groupSchema,
        description: 'Create a group; the creator is a member and admin',
        body: s(CreateGroupBody),
        response: { 201: s(Group), 409: s(ErrorBody), ...bodyErrors },
      },
    },
    forward('group-ms', 'POST', () => '/internal/groups', true),
  );
  api.get(
    '/v1/groups',
    {
      schema: {
        ...groupSchema,
        description:
          'Groups the user belongs to, oldest first; with `limit` (or `after`) a page of them and the `next` cursor',
        querystring: s(GroupListQuery),
        response: { 200: s(GroupList), ...errors },
      },
    },
    forward('group-ms', 'GET', (r) => `/internal/groups?${query(r)}`),
  );
  api.get(
    '/v1/groups/:id',
    {
      schema: {
        ...groupSchema,
        description: 'A group the user is a member of',
        params: s(GroupParams),
        response: { 200: s(Group), ...errors },
      },
    },
    forward('group-ms', 'GET', (r) => `/internal/groups/${params(r).id}`),
  );
  api.post(
    '/v1/groups/:id/members',
    {
      schema: {
        ...groupSchema,
        description: 'Add members (any member may add)',
        params: s(GroupParams),
        body: s(AddMembersBody),
        response: { 200: s(Group), 409: s(ErrorBody), ...bodyErrors },
      },
    },
    forward('group-ms', 'POST', (r) => `/internal/groups/${params(r).id}/members`, true),
  );
  api.delete(
    '/v1/groups/:id/members/:user',
    {
      schema: {
        ...groupSchema,
        description: 'Leave (self) or remove a member (admins only)',
        params: s(GroupMemberParams),
        response: { 200: s(Group), ...errors },
      },
    },
    forward('group-ms', 'DELETE', (r) => `/internal/groups/${params(r).id}/members/${params(r).user}`),
  );

  const deviceSchema = { tags: ['devices'], security: secured, params: s(DeviceParams) };
  api.put(
    '/v1/devices/:deviceId',
    {
      schema: {
        ...deviceSchema,
        description: 'Register the device for push',
        body: s(RegisterDeviceBody),
        response: { 204: Type.Null(), ...bodyErrors },
      },
    },
    forward('push-ms', 'PUT', (r) => `/internal/devices/${params(r).deviceId}`, true),
  );
  api.delete(
    '/v1/devices/:deviceId',
    {
      schema: {
        ...deviceSchema,
        description: 'Unregister the device',
        response: { 204: Type.Null(), ...errors },
      },
    },
    forward('push-ms', 'DELETE', (r) => `/internal/devices/${params(r).deviceId}`),
  );

  api.get(
    '/v1/presence',
    {
      schema: {
        tags: ['presence'],
        description: 'Online state and last seen',
        security: secured,
        querystring: s(PresenceQuery),
        response: { 200: s(PresenceResponse), ...errors },
      },
    },
    forward('session-ms', 'GET', (r) => `/internal/presence?${query(r)}`),
  );

  api.delete(
    '/v1/account',
    {
      schema: {
        tags: ['account'],
        description:
          'Erase what Parley holds of the user: leave every group, forget their devices and last seen, drop what awaits their ack and what is stored for them. Idempotent: a 503 part way is finished by calling again',
        security: secured,
        response: { 200: s(AccountErased), ...errors },
      },
    },
    async (request): Promise<AccountErased> => {
      // Groups first, so that no new group message is fanned out to the user meanwhile; what awaits
      // an ack before storage, so that none of it is handed to storage after storage is erased.
      const groups = await eraseIn('group-ms', request.user);
      const devices = await eraseIn('push-ms', request.user);
      const pending = await eraseIn('session-ms', request.user);
      const stored = await eraseIn('persistence-ms', request.user);
      const erased = { groups, devices, pending, stored };
      request.log.info({ user: request.user, erased }, 'account erased');
      return { erased };
    },
  );
  const eraseIn = async (service: UpstreamName, user: string): Promise<number> => {
    const { body } = await upstreams.call(service, { method: 'DELETE', path: '/internal/account', user });
    const checked = validateErasedCount(body);
    if (!checked.ok)
      throw new ParleyError('unavailable', `${service} answered the erasure with an unexpected body`);
    return checked.value.erased;
  };
}

const validateErasedCount = compile(ErasedCount);

/** As for frames: a body field nested too deep is refused, naming it (serializing it for the call would overflow the stack). */
function assertShallow(body: unknown): void {
  if (body === null || typeof body !== 'object') return;
  const tooDeep = nestingRefusal(body);
  if (tooDeep !== undefined) throw new ParleyError('invalid_request', tooDeep);
}

/** The one 2xx status a route's response table names. */
function documentedSuccess(request: FastifyRequest): number {
  const statuses = Object.keys((request.routeOptions.schema?.response ?? {}) as object);
  return Number(statuses.find((status) => status.startsWith('2')));
}

/**
 * Ids may be `.` or `..` (PROTOCOL.md's pattern allows them), but a URL resolves those as the
 * current or parent directory, however they are encoded: the call would reach another route.
 */
function assertPathSegment(name: string, value: string): void {
  if (value === '.' || value === '..')
    throw new ParleyError('invalid_request', `${name}: "${value}" cannot be addressed in a URL path`);
}
