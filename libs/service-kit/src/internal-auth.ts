import { timingSafeEqual } from 'node:crypto';
import {
  INTERNAL_REFUSED_HEADER,
  INTERNAL_SECRET_HEADER,
  INTERNAL_USER_HEADER,
  ParleyError,
  USER_ID_PATTERN,
} from '@parley/contracts';
import type { FastifyRequest } from 'fastify';
import type { HttpServer } from './http';

const userIdPattern = new RegExp(USER_ID_PATTERN);

function secretMatches(expected: Buffer, given: unknown): boolean {
  if (typeof given !== 'string') return false;
  const candidate = Buffer.from(given);
  return candidate.length === expected.length && timingSafeEqual(candidate, expected);
}

/**
 * Refuse every request to a route under one of `prefixes` that lacks the internal shared secret (403).
 * The route's own path decides, not the raw URL: the router decodes the path (`/%69nternal/x`
 * reaches `/internal/x`), so a check on the raw URL could be walked around.
 */
export function requireInternalSecret(
  app: HttpServer,
  secret: string,
  prefixes: string | string[] = '/internal',
): void {
  const expected = Buffer.from(secret);
  const guarded = [prefixes].flat();
  app.addHook('onRequest', async (request, reply) => {
    const route = request.routeOptions.url;
    if (route === undefined || !guarded.some((prefix) => route.startsWith(prefix))) return;
    if (!secretMatches(expected, request.headers[INTERNAL_SECRET_HEADER])) {
      reply.header(INTERNAL_REFUSED_HEADER, 'secret');
      throw new ParleyError('forbidden', 'internal endpoint: missing or wrong internal secret');
    }
  });
}

/** The user an edge authenticated, passed on an internal call. */
export function actingUser(request: FastifyRequest): string {
  const user = request.headers[INTERNAL_USER_HEADER];
  if (typeof user !== 'string' || !userIdPattern.test(user)) {
    throw new ParleyError('invalid_request', `${INTERNAL_USER_HEADER}: must match ${USER_ID_PATTERN}`);
  }
  return user;
}

export function internalHeaders(secret: string, user?: string): Record<string, string> {
  return user
    ? { [INTERNAL_SECRET_HEADER]: secret, [INTERNAL_USER_HEADER]: user }
    : { [INTERNAL_SECRET_HEADER]: secret };
}
