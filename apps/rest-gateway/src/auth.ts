import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ParleyError } from '@parley/contracts';
import { bearerToken, TokenVerifier } from '@parley/service-kit';
import { MonotonicRateLimitStore } from './rate-limit-store';

declare module 'fastify' {
  interface FastifyRequest {
    user: string;
  }
}

/**
 * Every route of `api` acts as the user its bearer token names (`request.user`), and is counted
 * against that user's rate limit.
 */
export async function authenticate(
  api: FastifyInstance,
  verifyToken: TokenVerifier,
  rateLimitPerMinute: number,
): Promise<void> {
  api.addHook('onRequest', async (request: FastifyRequest) => {
    request.user = (await verifyToken(bearerToken(request.headers.authorization))).user;
  });
  await api.register(rateLimit, {
    max: rateLimitPerMinute,
    timeWindow: 60_000,
    store: MonotonicRateLimitStore,
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
}
