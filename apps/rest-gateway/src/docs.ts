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
    transformObject: (document) => {
      const openapi = 'openapiObject' in document ? document.openapiObject : document.swaggerObject;
      markWideIntegers(openapi);
      return openapi;
    },
  });
  void http.register(swaggerUi, { routePrefix: '/docs' });
}

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;

/**
 * Each integer the document lets pass 32 bits gets `format: int64`. Client generators type an
 * integer without a format as 32 bits (Java and Kotlin `Integer`, C# `int`, Go `int32`): every
 * timestamp (milliseconds since the epoch, past 2^31 since January 1970) then failed to
 * deserialize, and `?until=` could not be written.
 */
function markWideIntegers(node: unknown): void {
  if (Array.isArray(node)) return node.forEach(markWideIntegers);
  if (node === null || typeof node !== 'object') return;
  const schema = node as { type?: unknown; format?: unknown; minimum?: unknown; maximum?: unknown };
  if (schema.type === 'integer' && schema.format === undefined && !fitsInt32(schema)) schema.format = 'int64';
  for (const value of Object.values(node)) markWideIntegers(value);
}

const fitsInt32 = ({ minimum, maximum }: { minimum?: unknown; maximum?: unknown }) =>
  typeof minimum === 'number' && typeof maximum === 'number' && minimum >= INT32_MIN && maximum <= INT32_MAX;
