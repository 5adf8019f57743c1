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
      // Innermost first: a union's branches are marked before they are merged into it.
      eachObject(openapi, (schema) => {
        simplifyUnion(schema);
        markWideInteger(schema);
      });
      return openapi;
    },
  });
  void http.register(swaggerUi, { routePrefix: '/docs' });
}

/** Calls `visit` on every object of `node`, its own objects (and arrays' items) before it. */
function eachObject(node: unknown, visit: (object: Record<string, unknown>) => void): void {
  if (Array.isArray(node)) return node.forEach((item) => eachObject(item, visit));
  if (node === null || typeof node !== 'object') return;
  for (const value of Object.values(node)) eachObject(value, visit);
  visit(node as Record<string, unknown>);
}

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;

/**
 * An integer the document lets pass 32 bits gets `format: int64`. Client generators type an
 * integer without a format as 32 bits (Java and Kotlin `Integer`, C# `int`, Go `int32`): every
 * timestamp (milliseconds since the epoch, past 2^31 since January 1970) then failed to
 * deserialize, and `?until=` could not be written.
 */
function markWideInteger(schema: {
  type?: unknown;
  format?: unknown;
  minimum?: unknown;
  maximum?: unknown;
}): void {
  if (schema.type === 'integer' && schema.format === undefined && !fitsInt32(schema)) schema.format = 'int64';
}

const fitsInt32 = ({ minimum, maximum }: { minimum?: unknown; maximum?: unknown }) =>
  typeof minimum === 'number' && typeof maximum === 'number' && minimum >= INT32_MIN && maximum <= INT32_MAX;

type Schema = Record<string, unknown> & { anyOf?: unknown[] };

/** A TypeBox literal as the document writes it: `{ type: 'string', enum: [value] }`, nothing else. */
const isStringLiteral = (branch: unknown): branch is { enum: [string] } => {
  const { type, enum: values, ...rest } = branch as Schema;
  return type === 'string' && Array.isArray(values) && values.length === 1 && Object.keys(rest).length === 0;
};
/** TypeBox's `Type.Null()` as the document writes it. */
const isNull = (branch: unknown) => {
  const { type, nullable, enum: values } = branch as Schema;
  return type === 'object' && nullable === true && Array.isArray(values) && values[0] === null;
};

/**
 * TypeBox's unions as generators read them best: a union of string literals (`direct` or `group`,
 * a platform, a report's reason) as one string `enum`, and `X` or null as `X` with `nullable`.
 * As `anyOf`, several generators made a wrapper type of each (one for the `chat` path parameter),
 * and `until` an object.
 */
function simplifyUnion(schema: Schema): void {
  const branches = schema.anyOf;
  if (branches && branches.length > 1 && branches.every(isStringLiteral)) {
    delete schema.anyOf;
    Object.assign(schema, { type: 'string', enum: branches.map((branch) => branch.enum[0]) });
  } else if (branches?.length === 2 && branches.some(isNull)) {
    const { description: _inner, ...value } = branches.find((branch) => !isNull(branch)) as Schema;
    delete schema.anyOf;
    Object.assign(schema, { ...value, ...schema, nullable: true });
  }
}
