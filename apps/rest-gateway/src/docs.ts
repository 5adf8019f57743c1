import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { HttpServer } from '@parley/service-kit';

/**
 * The OpenAPI document (at /docs/json) and its UI (at /docs). Registered before the routes, each of
 * them inside a plugin, so that it sees them all.
 */
export function registerDocs(http: HttpServer): void {
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
}
