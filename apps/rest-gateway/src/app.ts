import cors from '@fastify/cors';
import type { FastifyInstance } from 'fastify';
import { MAX_REST_BODY_BYTES } from '@parley/contracts';
import { EventBus } from '@parley/kafka';
import { buildHttpServer, HttpServer, Runtime, Service, TokenVerifier } from '@parley/service-kit';
import { authenticate } from './auth';
import { RestGatewaySettings } from './config';
import { registerDocs } from './docs';
import { registerAccountRoutes } from './routes/account';
import { registerBlockRoutes } from './routes/blocks';
import { registerMuteRoutes } from './routes/mutes';
import { registerReportRoutes } from './routes/reports';
import { registerDevTokenRoute } from './routes/dev-token';
import { registerDeviceRoutes } from './routes/devices';
import { registerGroupRoutes } from './routes/groups';
import { registerMessageRoutes } from './routes/messages';
import { registerPresenceRoutes } from './routes/presence';
import { registerSendRoute } from './routes/send';
import { Upstreams } from './upstream';

export interface RestGatewayDeps extends Omit<Runtime, 'closer'> {
  bus: EventBus;
  upstreams: Upstreams;
  verifyToken: TokenVerifier;
  settings: RestGatewaySettings;
  port: number;
  host?: string;
  /** Extra routes on the same server (the web client's static files). */
  plugins?: Array<(app: FastifyInstance) => Promise<void>>;
}

export interface RestGateway extends Service {
  http: HttpServer;
}

/** The public REST edge, built and not yet listening (`start()` listens; tests `inject()`). */
export function createRestGateway(deps: RestGatewayDeps): RestGateway {
  const { settings } = deps;
  const http = buildHttpServer({ ...deps, bodyLimit: MAX_REST_BODY_BYTES });
  http.decorateRequest('user', '');

  registerDocs(http);
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
    await authenticate(api, deps.verifyToken, settings.rateLimitPerMinute);
    registerSendRoute(api, deps);
    registerMessageRoutes(api, deps.upstreams);
    registerGroupRoutes(api, deps.upstreams);
    registerDeviceRoutes(api, deps.upstreams);
    registerBlockRoutes(api, deps.upstreams);
    registerMuteRoutes(api, deps.upstreams);
    registerReportRoutes(api, deps.upstreams);
    registerPresenceRoutes(api, deps.upstreams);
    registerAccountRoutes(api, deps.upstreams);
  });

  if (settings.devMode && settings.devToken) {
    const devToken = settings.devToken;
    // Inside a plugin, like every route, so the OpenAPI document (registered first) sees it.
    void http.register(async (dev) => registerDevTokenRoute(dev, devToken));
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
