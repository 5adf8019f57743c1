import type { FastifyReply, FastifyRequest } from 'fastify';
import { nestingRefusal, ParleyError } from '@parley/contracts';
import { UpstreamName, Upstreams } from '../upstream';

/**
 * The routes another service owns: authenticate here, then call its internal API as the user.
 * `forward(service, method, path, withBody)` is such a route's handler: the upstream's answer passes
 * on as it is, if it is the success the route documents.
 */
export function forwarder(upstreams: Upstreams) {
  const forward =
    (service: UpstreamName, method: string, path: (request: FastifyRequest) => string, withBody = false) =>
    async (request: FastifyRequest, reply: FastifyReply) => {
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
  return forward;
}

type P = { id: string; user: string; deviceId: string; chat: string };

/** The path parameters, each fit to be one segment of the upstream's path. */
export const params = (request: FastifyRequest) => {
  const values = request.params as P;
  for (const [name, value] of Object.entries(values)) assertPathSegment(name, value);
  return values;
};

// Only the keys the route's schema names: one it does not take (a cache-buster, a header's name)
// is no business of the upstream's. Commas stay commas (a query value may hold them as they are):
// written %2C, a presence list within its 13,000 characters (repeats, empty names) tripled past the
// upstream's 16 KiB request line, and was refused there (431).
export const query = (request: FastifyRequest) => {
  const known = (request.routeOptions.schema?.querystring as { properties?: object } | undefined)?.properties;
  const given = request.query as Record<string, string>;
  const taken = Object.keys(given).filter((key) => Object.hasOwn(known ?? {}, key));
  return new URLSearchParams(taken.map((key): [string, string] => [key, String(given[key])]))
    .toString()
    .replaceAll('%2C', ',');
};

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
